"""Attribution: ``allocated_costs``, the ``untagged_spend`` quarantine and the ``tag_compliance`` breakdown.

All three come from one classification of the day's cost lines (tags, virtual tags, pools), so they
are one multi-asset: the day's tags map, the most expensive column to decode, is read once for all
three, and the tables can never disagree about what is untagged. Each can be materialized alone.
"""

import dagster as dg
import polars as pl

from cost_pipeline.defs.allocation.checks import CONSERVES
from cost_pipeline.defs.compliance.checks import share_evaluations
from cost_pipeline.defs.metadata import column_schema, day_metadata
from cost_pipeline.defs.partitions import BACKFILL_POLICY, DAILY, partition_days
from cost_pipeline.defs.resources import LakeResource, PipelineConfig
from cost_pipeline.lib.attribution import DayAttribution, allocate_day, attribute_lake_day
from cost_pipeline.lib.compliance import (
    compliance_breakdown,
    summary_from_sums,
    top_untagged_resources,
    untagged_shares,
)
from cost_pipeline.lib.lake import PARQUET
from cost_pipeline.lib.markdown import md_table
from cost_pipeline.lib.overlap import in_order

ALLOCATED = dg.AssetSpec(
    "allocated_costs",
    deps=["cost_lines", "usage"],
    group_name="allocation",
    kinds={"polars", "parquet"},
    description=(
        "Direct costs by tags, shared pools by their drivers, the rest unattributed with a reason. rules_version "
        "(a hash of the tagging and allocation rules) is written into every row and is the code version, so "
        "changing the rules marks materialized days stale."
    ),
)
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
    specs=[ALLOCATED, UNTAGGED, COMPLIANCE],
    partitions_def=DAILY,
    backfill_policy=BACKFILL_POLICY,
    name="attribution",
    can_subset=True,  # the contract's `--select cost_lines,untagged_spend,...` names some of the three
)
def attribution(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource):
    settings = pipeline.settings()
    lake = cost_lake.lake()
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    shares = []
    days = partition_days(context)
    sizes = lake.day_sizes("cost_lines")
    with (lake.staging("tag_compliance") as compliance_stage, lake.staging("untagged_spend") as untagged_stage,
          lake.staging("allocated_costs") as allocated_stage,
          in_order(lambda day: _computed(lake, settings, day, selected, untagged_stage), days, [sizes.get(d, 0) for d in days]) as computed):
        for day, (attributed, allocated) in computed:
            sums = attributed.sums
            if "allocated_costs" in selected:
                _allocated_day(context, settings, day, allocated, allocated_stage)
            summary = summary_from_sums(sums)
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
            # the metadata's columns only: the quarantined lines' tags maps are not decoded again
            untagged_path = untagged_stage.reserve(day)[1]
            staged = untagged_stage.scan(day)
            quarantined = staged.select("amount", "currency", "reason", "resource_id", "account_id", "service").collect()
            day_shares = untagged_shares(summary)
            shares.append(day_shares)
            by_reason = quarantined.group_by("reason", "currency").agg(pl.col("amount").sum()).sort("currency", "amount", descending=[False, True])
            context.add_asset_metadata(
                {
                    **day_metadata(quarantined, untagged_path, ["amount"]),
                    "dagster/column_schema": column_schema(staged.collect_schema()),
                    **{f"untagged % ({c})": dg.MetadataValue.float(round(float(share) * 100, 2)) for c, share in day_shares.select("currency", "share").iter_rows()},
                    "by_reason": dg.MetadataValue.json({f"{r} ({c})": float(round(a, 2)) for r, c, a in by_reason.iter_rows()}),
                    "top_untagged_resources": dg.MetadataValue.md(_top_resources_md(quarantined)),
                },
                asset_key="untagged_spend",
                partition_key=day.isoformat(),
            )
    if "allocated_costs" in selected:
        yield dg.MaterializeResult(asset_key="allocated_costs")
        # one per day, re-read from the lake, blocking: a failed day stops what follows
        yield from CONSERVES.evaluations(lake, settings, partition_days(context))
    if "tag_compliance" in selected:
        yield dg.MaterializeResult(asset_key="tag_compliance")
    if "untagged_spend" in selected:
        yield dg.MaterializeResult(asset_key="untagged_spend")
        yield from share_evaluations(pl.concat(shares), settings.tagging)


def _computed(lake, settings, day, selected: set[str], untagged_stage) -> tuple[DayAttribution, pl.DataFrame | None]:
    """What the selected tables need of a day, on a worker thread (``lib/overlap``: no Dagster context
    here): the day summed per distinct combination of what the rules read (its tag sets, not 10^7
    maps), the combinations classified (``lib/attribution``), the quarantine's lines sunk (a second
    pass), and the day's allocation."""
    attributed = attribute_lake_day(lake, day, settings.tagging, settings.allocation.pools)
    if "untagged_spend" in selected:
        attributed.quarantine().sink_parquet(untagged_stage.reserve(day)[0], **PARQUET)
    if "allocated_costs" not in selected:
        return attributed, None
    try:
        return attributed, allocate_day(lake, day, settings, attributed.sums)
    except FileNotFoundError as exc:
        raise dg.Failure(description=f"{exc}: materialize `usage` for these days first (or select it too)") from None


def _allocated_day(context: dg.AssetExecutionContext, settings, day, allocated: pl.DataFrame, staging) -> None:
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
        asset_key="allocated_costs",
        partition_key=day.isoformat(),
    )
