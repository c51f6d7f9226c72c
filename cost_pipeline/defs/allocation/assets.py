"""The ``allocated_costs`` table: every cent of the day, once, with who pays for it."""

import dagster as dg

from cost_pipeline.defs.allocation.checks import RECONCILES, reconciliation_result
from cost_pipeline.defs.metadata import day_metadata
from cost_pipeline.defs.partitions import DAILY, SETTINGS, SINGLE_RUN, partition_days
from cost_pipeline.defs.resources import PipelineConfig
from cost_pipeline.lib.allocate import allocate
from cost_pipeline.lib.tags import apply_tag_schema


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    group_name="allocation",
    kinds={"polars", "parquet"},
    deps=["cost_lines"],
    check_specs=[RECONCILES],
    code_version=SETTINGS.rules_version,
)
def allocated_costs(context: dg.AssetExecutionContext, pipeline: PipelineConfig) -> dg.MaterializeResult:
    """Direct costs by canonical tags; spend failing the schema as ``unattributed`` with its reason.

    ``rules_version`` (a hash of the tagging and allocation rules) is written into every row and is
    the asset's code version, so changing the rules marks materialized days stale.
    """
    settings = pipeline.settings()
    lake = pipeline.lake()
    days = partition_days(context)
    for day in days:
        lines = lake.scan_days("cost_lines", [day]).collect()
        allocated = allocate(apply_tag_schema(lines, settings.tagging), settings.rules_version)
        path = lake.write_day("allocated_costs", day, allocated)
        context.add_asset_metadata(day_metadata(allocated, str(path), ["amount"]), partition_key=day.isoformat())
    return dg.MaterializeResult(check_results=[reconciliation_result(lake, days)])
