"""Untagged-share thresholds: a warning to act on, and an error that holds back the reports."""

import dagster as dg
import polars as pl

from cost_pipeline.config import TaggingConfig

UNTAGGED_WARN = dg.AssetCheckSpec(
    "untagged_share_below_warn",
    asset="untagged_spend",
    description="Each day's untagged share of effective cost stays below tagging.untagged_warn_share.",
)
UNTAGGED_ERROR = dg.AssetCheckSpec(
    "untagged_share_below_error",
    asset="untagged_spend",
    blocking=True,
    description="Each day's untagged share stays below tagging.untagged_error_share; above it, reports are held back.",
)


def share_results(shares: pl.DataFrame, schema: TaggingConfig) -> list[dg.AssetCheckResult]:
    results = []
    for spec, limit, severity in (
        (UNTAGGED_WARN, schema.untagged_warn_share, dg.AssetCheckSeverity.WARN),
        (UNTAGGED_ERROR, schema.untagged_error_share, dg.AssetCheckSeverity.ERROR),
    ):
        over = shares.filter(pl.col("share") > limit)
        results.append(
            dg.AssetCheckResult(
                check_name=spec.name,
                passed=over.is_empty(),
                severity=severity,
                metadata={
                    "threshold": limit,
                    "worst_share": float(shares["share"].max() or 0.0),
                    "days_over": over.height,
                    "days_over_list": ", ".join(f"{r['date']} {r['currency']} {r['share']:.1%}" for r in over.head(20).iter_rows(named=True)) or "none",
                },
            )
        )
    return results
