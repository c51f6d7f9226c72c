"""Tag compliance: the ``untagged_spend`` quarantine and the ``tag_compliance`` breakdown.

Both come from one classification of the day's cost lines, so they are one multi-asset: the lines
are read and classified once, and the two tables can never disagree about what is untagged.
"""

import dagster as dg
import polars as pl

from cost_pipeline.defs.compliance.checks import share_evaluations
from cost_pipeline.defs.metadata import day_metadata
from cost_pipeline.defs.partitions import BACKFILL_POLICY, DAILY, partition_days
from cost_pipeline.defs.resources import LakeResource, PipelineConfig
from cost_pipeline.lib.compliance import (
    compliance_breakdown,
    summary_plan,
    top_untagged_resources,
    untagged_shares,
)
from cost_pipeline.lib.markdown import md_table
from cost_pipeline.lib.pools import classify_plan
from cost_pipeline.lib.tags import CLASSIFY_COLUMNS, day_tag_keys, quarantine

UNTAGGED = dg.AssetSpec(
    "untagged_spend",
    deps=["cost_lines"],
    group_name="compliance",
    kinds={"polars", "parquet"},
    description=(
        "Each cost line that fails the tag schema, with one machine-readable reason (missing:<key>, "
        "invalid:<key>, unknown_team). The spend stays in allocated_costs as unattributed, so totals hold."
    ),
)
COMPLIANCE = dg.AssetSpec(
    "tag_compliance",
    deps=["cost_lines"],
    group_name="compliance",
    kinds={"polars", "parquet"},
    description="Share of effective cost that is compliant, by account, service, team and reason, per day.",
)


def _top_resources_md(quarantined: pl.DataFrame) -> str:
    top = top_untagged_resources(quarantined)
    return md_table(
        ["resource", "account", "service", "amount", "currency", "reason"],
        [[r["resource_id"], r["account_id"], r["service"], round(r["amount"], 2), r["currency"], r["reason"]] for r in top.iter_rows(named=True)],
    )


@dg.multi_asset(
    specs=[UNTAGGED, COMPLIANCE],
    partitions_def=DAILY,
    backfill_policy=BACKFILL_POLICY,
    name="tag_compliance_tables",
    can_subset=True,  # the contract's `--select cost_lines,untagged_spend,...` names one of the two
)
def tag_compliance_tables(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource):
    settings = pipeline.settings()
    lake = cost_lake.lake()
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    shares = []
    with lake.staging("tag_compliance") as compliance_stage, lake.staging("untagged_spend") as untagged_stage:
        for day in partition_days(context):
            lines = lake.scan_days("cost_lines", [day]).select(CLASSIFY_COLUMNS)
            tagged = classify_plan(lines, day_tag_keys(lake, day, lines), settings.tagging, settings.allocation.pools)
            queries = [summary_plan(tagged)]
            if "untagged_spend" in selected:  # the quarantine is sunk in the same pass over the day
                staged_path, untagged_path = untagged_stage.reserve(day)
                queries.append(quarantine(tagged).sink_parquet(staged_path, lazy=True))
            summary = pl.collect_all(queries, engine="streaming")[0]
            if "tag_compliance" in selected:
                breakdown = compliance_breakdown(summary)
                breakdown_path = compliance_stage.write_day(day, breakdown)
                context.add_asset_metadata(
                    day_metadata(breakdown.filter(pl.col("dimension") == "reason"), breakdown_path, ["untagged"]),
                    asset_key="tag_compliance",
                    partition_key=day.isoformat(),
                )
            if "untagged_spend" not in selected:
                continue
            quarantined = untagged_stage.scan(day).collect()
            day_shares = untagged_shares(summary)
            shares.append(day_shares)
            by_reason = quarantined.group_by("reason", "currency").agg(pl.col("amount").sum()).sort("currency", "amount", descending=[False, True])
            context.add_asset_metadata(
                {
                    **day_metadata(quarantined, untagged_path, ["amount"]),
                    **{f"untagged % ({c})": dg.MetadataValue.float(round(float(share) * 100, 2)) for c, share in day_shares.select("currency", "share").iter_rows()},
                    "by_reason": dg.MetadataValue.json({f"{r} ({c})": float(round(a, 2)) for r, c, a in by_reason.iter_rows()}),
                    "top_untagged_resources": dg.MetadataValue.md(_top_resources_md(quarantined)),
                },
                asset_key="untagged_spend",
                partition_key=day.isoformat(),
            )
    if "tag_compliance" in selected:
        yield dg.MaterializeResult(asset_key="tag_compliance")
    if "untagged_spend" in selected:
        yield dg.MaterializeResult(asset_key="untagged_spend")
        yield from share_evaluations(pl.concat(shares), settings.tagging)
