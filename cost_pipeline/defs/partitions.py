"""Daily UTC partitions shared by every daily table, starting where the config says."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from cost_pipeline.config import load_settings

SETTINGS = load_settings()
DAILY = dg.DailyPartitionsDefinition(start_date=SETTINGS.partitions_start_date.isoformat(), timezone="UTC")
SINGLE_RUN = dg.BackfillPolicy.single_run()


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days a run covers: one partition, or a whole range in a single-run backfill."""
    window = context.partition_time_window
    first, last = window.start.date(), window.end.date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days)]
