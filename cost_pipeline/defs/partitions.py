"""Daily UTC partitions shared by every daily table, starting where the config says."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from cost_pipeline.config import load_settings

SETTINGS = load_settings()
DAILY = dg.DailyPartitionsDefinition(start_date=SETTINGS.partitions_start_date.isoformat(), timezone="UTC")
# One run per backfill by default (Dagster starts once, memory stays per day); with
# operations.backfill_days_per_run N, a backfill is split into runs of N days that run in parallel
# (e.g. one Kubernetes pod each with the K8sRunLauncher).
BACKFILL_POLICY = (
    dg.BackfillPolicy.multi_run(max_partitions_per_run=SETTINGS.operations.backfill_days_per_run)
    if SETTINGS.operations.backfill_days_per_run
    else dg.BackfillPolicy.single_run()
)


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days a run covers: one partition, or a whole range in a single-run backfill."""
    window = context.partition_time_window
    first, last = window.start.date(), window.end.date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days)]
