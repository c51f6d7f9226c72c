"""Untagged-share thresholds, per day: a warning to act on, and an error that holds back the reports.

Partitioned checks (one result per day): ``untagged_spend`` reports them for every day it writes,
and each runs on its own for one partition from the UI.
"""

import datetime as dt

import dagster as dg
import polars as pl

from cost_pipeline.config import TaggingConfig
from cost_pipeline.defs.partitions import DAILY, partition_days
from cost_pipeline.defs.resources import LakeResource, PipelineConfig
from cost_pipeline.lib.lake import Lake

WARN, ERROR = "untagged_share_below_warn", "untagged_share_below_error"


def _limits(schema: TaggingConfig):
    return ((WARN, schema.untagged_warn_share, dg.AssetCheckSeverity.WARN, False),
            (ERROR, schema.untagged_error_share, dg.AssetCheckSeverity.ERROR, True))


def share_evaluations(shares: pl.DataFrame, schema: TaggingConfig) -> list[dg.AssetCheckEvaluation]:
    """``shares``: date, currency, share (from ``compliance.untagged_shares``) for the days written."""
    out = []
    for (day,), day_shares in shares.group_by("date", maintain_order=True):
        for name, limit, severity, blocking in _limits(schema):
            over = day_shares.filter(pl.col("share") > limit)
            out.append(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("untagged_spend"), check_name=name, passed=over.is_empty(), severity=severity, blocking=blocking,
                partition=day.isoformat(),
                metadata={"threshold": limit, "worst_share": float(day_shares["share"].max() or 0.0),
                          "over": ", ".join(f"{r['currency']} {r['share']:.1%}" for r in over.iter_rows(named=True)) or "none"},
            ))
    return out


def _day_shares(lake: Lake, day: dt.date) -> pl.DataFrame:
    """The day's untagged share per currency, re-read from the lake (quarantine over all cost lines)."""
    total = lake.scan_days("cost_lines", [day]).group_by("currency").agg(pl.col("effective_cost").sum().alias("total"))
    untagged = lake.scan_days("untagged_spend", [day]).group_by("currency").agg(pl.col("amount").sum().alias("untagged"))
    both = total.join(untagged, on="currency", how="left").collect()
    return both.select(pl.lit(day).alias("date"), "currency", pl.when(pl.col("total") > 0).then(
        pl.col("untagged").cast(pl.Float64).fill_null(0.0) / pl.col("total").cast(pl.Float64)).otherwise(0.0).alias("share"))


def _standalone(name: str, description: str, blocking: bool):
    @dg.asset_check(asset="untagged_spend", name=name, description=description, partitions_def=DAILY, blocking=blocking)
    def check(context: dg.AssetCheckExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource) -> dg.AssetCheckResult:
        settings = pipeline.settings()
        days = partition_days(context.op_execution_context)
        evaluations = [e for e in share_evaluations(pl.concat([_day_shares(cost_lake.lake(), d) for d in days]), settings.tagging)
                       if e.check_name == name]
        first = evaluations[0]
        return dg.AssetCheckResult(passed=all(e.passed for e in evaluations), severity=first.severity,
                                   metadata=first.metadata if len(evaluations) == 1 else {"days": len(evaluations)})

    return check


untagged_share_below_warn = _standalone(WARN, "Each day's untagged share of effective cost stays below tagging.untagged_warn_share.", False)
untagged_share_below_error = _standalone(
    ERROR, "Each day's untagged share stays below tagging.untagged_error_share; above it, reports are held back.", True)
