"""Tag compliance: the ``untagged_spend`` quarantine and the ``tag_compliance`` breakdown."""

import polars as pl

import dagster as dg

from cost_pipeline.defs.compliance.checks import UNTAGGED_ERROR, UNTAGGED_WARN, share_results
from cost_pipeline.defs.metadata import day_metadata
from cost_pipeline.defs.partitions import DAILY, SINGLE_RUN, partition_days
from cost_pipeline.defs.resources import PipelineConfig
from cost_pipeline.lib.compliance import compliance_breakdown, top_untagged_resources, untagged_shares
from cost_pipeline.lib.markdown import md_table
from cost_pipeline.lib.pools import classify
from cost_pipeline.lib.tags import quarantine


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    group_name="compliance",
    kinds={"polars", "parquet"},
    deps=["cost_lines"],
    check_specs=[UNTAGGED_WARN, UNTAGGED_ERROR],
)
def untagged_spend(context: dg.AssetExecutionContext, pipeline: PipelineConfig) -> dg.MaterializeResult:
    """Each cost line that fails the tag schema, with one machine-readable reason.

    Reasons are ``missing:<key>``, ``invalid:<key>`` or ``unknown_team``. The spend stays in
    ``allocated_costs`` as ``unattributed``, so quarantining never changes a total.
    """
    settings = pipeline.settings()
    lake = pipeline.lake()
    shares = []
    for day in partition_days(context):
        tagged = classify(lake.scan_days("cost_lines", [day]).collect(), settings.tagging, settings.allocation.pools)
        quarantined = quarantine(tagged)
        path = lake.write_day("untagged_spend", day, quarantined)
        day_shares = untagged_shares(tagged)
        shares.append(day_shares)
        by_reason = quarantined.group_by("reason").agg(pl.col("amount").sum()).sort("amount", descending=True)
        top = top_untagged_resources(quarantined)
        context.add_asset_metadata(
            {
                **day_metadata(quarantined, str(path), ["amount"]),
                "untagged_share": float(day_shares["share"].max() or 0.0),
                "by_reason": dg.MetadataValue.json({r: float(round(a, 2)) for r, a in by_reason.iter_rows()}),
                "top_untagged_resources": dg.MetadataValue.md(
                    md_table(
                        ["resource", "account", "service", "amount", "currency", "reason"],
                        [[r["resource_id"], r["account_id"], r["service"], round(r["amount"], 2), r["currency"], r["reason"]] for r in top.iter_rows(named=True)],
                    )
                ),
            },
            partition_key=day.isoformat(),
        )
    return dg.MaterializeResult(check_results=share_results(pl.concat(shares), settings.tagging))


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    group_name="compliance",
    kinds={"polars", "parquet"},
    deps=["cost_lines"],
)
def tag_compliance(context: dg.AssetExecutionContext, pipeline: PipelineConfig) -> dg.MaterializeResult:
    """Share of effective cost that is compliant, by account, service, team and reason, per day."""
    settings = pipeline.settings()
    lake = pipeline.lake()
    for day in partition_days(context):
        lines = lake.scan_days("cost_lines", [day]).collect()
        table = compliance_breakdown(classify(lines, settings.tagging, settings.allocation.pools))
        path = lake.write_day("tag_compliance", day, table)
        context.add_asset_metadata(day_metadata(table.filter(pl.col("dimension") == "reason"), str(path), ["untagged"]), partition_key=day.isoformat())
    return dg.MaterializeResult()
