"""The ``untagged_spend`` quarantine: spend that breaks the tagging schema, line by line."""

import polars as pl

import dagster as dg

from cost_pipeline.defs.metadata import day_metadata
from cost_pipeline.defs.partitions import DAILY, SINGLE_RUN, partition_days
from cost_pipeline.defs.resources import PipelineConfig
from cost_pipeline.lib.tags import apply_tag_schema, quarantine


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    group_name="compliance",
    kinds={"polars", "parquet"},
    deps=["cost_lines"],
)
def untagged_spend(context: dg.AssetExecutionContext, pipeline: PipelineConfig) -> dg.MaterializeResult:
    """Each cost line that fails the tag schema, with one machine-readable reason.

    Reasons are ``missing:<key>``, ``invalid:<key>`` or ``unknown_team``. The spend stays in
    ``allocated_costs`` as ``unattributed``, so quarantining never changes a total.
    """
    settings = pipeline.settings()
    lake = pipeline.lake()
    for day in partition_days(context):
        lines = lake.scan_days("cost_lines", [day]).collect()
        quarantined = quarantine(apply_tag_schema(lines, settings.tagging))
        path = lake.write_day("untagged_spend", day, quarantined)
        metadata = day_metadata(quarantined, str(path), ["amount"])
        total = lines["effective_cost"].sum() if lines.height else 0
        untagged = quarantined["amount"].sum() if quarantined.height else 0
        metadata["untagged_share"] = dg.MetadataValue.float(float(untagged / total) if total else 0.0)
        by_reason = quarantined.group_by("reason").agg(pl.col("amount").sum()).sort("amount", descending=True)
        metadata["by_reason"] = dg.MetadataValue.json({r: float(round(a, 2)) for r, a in by_reason.iter_rows()})
        context.add_asset_metadata(metadata, partition_key=day.isoformat())
    return dg.MaterializeResult()
