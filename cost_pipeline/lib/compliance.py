"""How compliant each day's spend is with the tag schema, and where the untagged money sits.

Shares are of effective cost (what teams are charged), per currency: a day's untagged share is
quarantined effective cost over total effective cost of that day and currency.
"""

from __future__ import annotations

import polars as pl

from cost_pipeline.lib.money import MONEY
from cost_pipeline.lib.tags import TAG_COLUMNS_REASON

DIMENSIONS = {"account": "sub_account_id", "service": "service", "team": "team", "reason": TAG_COLUMNS_REASON}


def summary_plan(tagged: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Effective cost and lines per day, currency, account, service, team and reason (small). The
    breakdown and the untagged shares are both derived from it."""
    return tagged.lazy().group_by("date", "currency", *DIMENSIONS.values()).agg(pl.col("effective_cost").sum(), pl.len().alias("lines"))


def summary_from_sums(sums: pl.DataFrame) -> pl.DataFrame:
    """:func:`summary_plan`'s result from ``allocate.attribution_sums`` (same lines, finer keys)."""
    return sums.group_by("date", "currency", *DIMENSIONS.values()).agg(pl.col("effective_cost").sum(), pl.col("lines").sum().cast(pl.UInt32))


def compliance_summary(tagged: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    return summary_plan(tagged).collect(engine="streaming")


def compliance_breakdown(summary: pl.DataFrame) -> pl.DataFrame:
    """One row per day, dimension (account, service, team, reason), value and currency."""
    zero = pl.lit(0).cast(MONEY)
    untagged = pl.col(TAG_COLUMNS_REASON).is_not_null()
    parts = []
    for dimension, column in DIMENSIONS.items():
        value = pl.col(column).cast(pl.String)
        value = value.fill_null("compliant" if dimension == "reason" else "(none)")
        parts.append(
            summary.group_by("date", "currency", value.alias("value"))
            .agg(
                pl.col("effective_cost").sum().alias("total"),
                pl.col("effective_cost").filter(untagged).sum().alias("untagged"),
                pl.col("lines").sum().cast(pl.UInt32).alias("lines"),
            )
            .with_columns(dimension=pl.lit(dimension))
        )
    out = pl.concat(parts).with_columns(pl.col("untagged").fill_null(zero))
    out = out.with_columns(
        compliant=pl.col("total") - pl.col("untagged"),
        compliant_share=pl.when(pl.col("total") != 0)
        .then(1 - pl.col("untagged").cast(pl.Float64) / pl.col("total").cast(pl.Float64))
        .otherwise(None),
    )
    return out.select(
        "date", "dimension", "value", "currency", "lines", "total", "compliant", "untagged", "compliant_share"
    ).sort("date", "dimension", "currency", "untagged", "value", descending=[False, False, False, True, False], nulls_last=True)


def untagged_shares(summary: pl.DataFrame) -> pl.DataFrame:
    """Per day and currency: total, untagged and the untagged share of effective cost."""
    return (
        summary.group_by("date", "currency")
        .agg(
            pl.col("effective_cost").sum().alias("total"),
            pl.col("effective_cost").filter(pl.col(TAG_COLUMNS_REASON).is_not_null()).sum().alias("untagged"),
        )
        .with_columns(
            share=pl.when(pl.col("total") > 0)
            .then(pl.col("untagged").cast(pl.Float64).fill_null(0) / pl.col("total").cast(pl.Float64))
            .otherwise(0.0)
        )
        .sort("date", "currency")
    )


def top_untagged_resources(quarantined: pl.DataFrame | pl.LazyFrame, n: int = 10) -> pl.DataFrame | pl.LazyFrame:
    """The resources whose untagged spend is largest: where tagging work pays off first, each with its
    most frequent reason (ties: the first by name). Two group-bys rather than ``mode()``, which holds
    every line in memory: a year's quarantined lines (24 M) peaked at 7.9 GiB."""
    keys = ["resource_id", "account_id", "service", "currency"]
    return (
        quarantined.group_by(*keys, "reason").agg(pl.col("amount").sum(), pl.len().alias("lines"))
        .group_by(keys)
        .agg(pl.col("amount").sum(), pl.col("reason").sort_by("lines", "reason", descending=[True, False], nulls_last=True).first(),
             pl.col("lines").sum())
        .sort("amount", "resource_id", descending=[True, False])
        .head(n)
    )
