"""The ``allocated_costs`` table: every cent of the day, once, with who pays for it."""

import dagster as dg
import polars as pl

from cost_pipeline.defs.allocation.checks import conservation_evaluations
from cost_pipeline.defs.metadata import day_metadata
from cost_pipeline.defs.partitions import BACKFILL_POLICY, DAILY, partition_days
from cost_pipeline.defs.resources import LakeResource, PipelineConfig
from cost_pipeline.lib.allocate import allocate
from cost_pipeline.lib.pools import classify_plan
from cost_pipeline.lib.tags import CLASSIFY_COLUMNS, day_tag_keys
from cost_pipeline.lib.usage import read_usage


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=BACKFILL_POLICY,
    group_name="allocation",
    kinds={"polars", "parquet"},
    deps=["cost_lines", "usage"],
)
def allocated_costs(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource):
    """Direct costs by tags, shared pools by their drivers, the rest ``unattributed`` with a reason.

    ``rules_version`` (a hash of the tagging and allocation rules) is written into every row and is
    the asset's code version, so changing the rules marks materialized days stale.
    """
    settings = pipeline.settings()
    lake = cost_lake.lake()
    days = partition_days(context)
    pools = settings.allocation.pools
    with lake.staging("allocated_costs") as staging:
        for day in days:
            lines = lake.scan_days("cost_lines", [day]).select(CLASSIFY_COLUMNS)
            try:
                samples = read_usage(lake, [day]) if pools else None
            except FileNotFoundError as exc:
                raise dg.Failure(description=f"{exc}: materialize `usage` for these days first (or select it too)") from None
            tagged = classify_plan(lines, day_tag_keys(lake, day, lines), settings.tagging, pools)  # lazy: streamed into allocate's sums
            allocated = allocate(tagged, settings.rules_version, pools, samples, settings.tagging)
            path = staging.write_day(day, allocated)
            no_usage = allocated.filter(pl.col("reason").str.starts_with("no_usage:"))["reason"].to_list()
            for reason in no_usage:
                context.log.warning(f"{day}: pool {reason.split(':', 1)[1]} has no usage data; its cost stays unattributed")
            per_pool = allocated.filter(pl.col("pool").is_not_null()).group_by("pool", "allocation").agg(pl.col("amount").sum())
            context.add_asset_metadata(
                {
                    **day_metadata(allocated, str(path), ["amount"]),
                    "pools": dg.MetadataValue.json({f"{p} ({a})": float(round(v, 2)) for p, a, v in per_pool.sort("pool").iter_rows()}),
                    "pools_without_usage": ", ".join(r.split(":", 1)[1] for r in no_usage) or "none",
                    "rules_version": settings.rules_version,
                },
                partition_key=day.isoformat(),
            )
    yield dg.MaterializeResult()
    yield from conservation_evaluations(lake, days)  # one per day, blocking: a failed day stops what follows
