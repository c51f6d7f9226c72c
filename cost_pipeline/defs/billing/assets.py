"""The ``cost_lines`` table: every charge of the day from every billing source, normalized."""

import dagster as dg
import polars as pl

from cost_pipeline.defs.billing.resources import storage_for
from cost_pipeline.defs.failures import input_errors_as_failures
from cost_pipeline.defs.metadata import day_metadata
from cost_pipeline.defs.partitions import DAILY, SINGLE_RUN, partition_days
from cost_pipeline.defs.resources import PipelineConfig
from cost_pipeline.lib.billing.fingerprint import day_fingerprint
from cost_pipeline.lib.billing.sources import read_billing_day


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    group_name="billing",
    kinds={"polars", "parquet"},
)
def cost_lines(context: dg.AssetExecutionContext, pipeline: PipelineConfig) -> dg.MaterializeResult:
    """Every charge of a UTC day, FOCUS-aligned, with billed and effective (amortized) cost.

    A day is written only after all its sources were read and validated, so a bad file leaves the
    previously materialized day untouched.
    """
    settings = pipeline.settings()
    lake = pipeline.lake()
    rows = 0
    for day in partition_days(context):
        with input_errors_as_failures():
            frame = read_billing_day(settings.billing_sources, day, storage_for)
        path = lake.write_day("cost_lines", day, frame)
        rows += frame.height
        metadata = day_metadata(frame, str(path), ["billed_cost", "effective_cost"])
        metadata["final_share"] = float(frame["is_final"].mean() or 0.0) if frame.height else 0.0
        metadata["final"] = bool(frame.height) and bool(frame["is_final"].all())
        for source in settings.billing_sources:
            metadata[f"fingerprint/{source.name}"] = day_fingerprint(frame.filter(pl.col("source") == source.name))
        context.add_asset_metadata(metadata, partition_key=day.isoformat())
    return dg.MaterializeResult(metadata={"rows_in_run": rows})
