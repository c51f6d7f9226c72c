"""Who pays for each line: direct costs by tags, the rest kept visible as unattributed.

Every cent of effective cost lands in exactly one row of ``allocated_costs``: per day and currency
``sum(amount) == sum(cost_lines.effective_cost)`` exactly, because amounts are exact decimals summed
from the same lines. Spend that fails the tag schema is not dropped: it stays in the named bucket
``__unattributed__`` with the quarantine reason, so totals reconcile to the bill.
"""

from __future__ import annotations

import polars as pl

from cost_pipeline.lib.money import MONEY
from cost_pipeline.lib.tags import TAG_COLUMNS_REASON

UNATTRIBUTED_TEAM = "__unattributed__"
DIMENSIONS = ["team", "project", "workload_type", "environment", "experiment_id"]
ALLOCATED_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "team": pl.String(),
    "project": pl.String(),
    "workload_type": pl.String(),
    "environment": pl.String(),
    "experiment_id": pl.String(),
    "allocation": pl.String(),
    "pool": pl.String(),
    "amount": MONEY,
    "currency": pl.String(),
    "rules_version": pl.String(),
    "reason": pl.String(),
    "tag_source": pl.String(),
}


def allocate(tagged: pl.DataFrame, rules_version: str) -> pl.DataFrame:
    """Aggregate tagged cost lines into allocation rows (direct or unattributed)."""
    compliant = pl.col(TAG_COLUMNS_REASON).is_null()
    # a schema may define fewer keys than the five dimensions; absent ones stay null
    tagged = tagged.with_columns([pl.lit(None, pl.String).alias(d) for d in DIMENSIONS if d not in tagged.columns])
    direct = (
        tagged.filter(compliant)
        .group_by(["date", *DIMENSIONS, "tag_source", "currency"])
        .agg(pl.col("effective_cost").sum().alias("amount"))
        .with_columns(allocation=pl.lit("direct"), pool=pl.lit(None, pl.String), reason=pl.lit(None, pl.String))
    )
    unattributed = (
        tagged.filter(~compliant)
        .group_by(["date", "currency", TAG_COLUMNS_REASON])
        .agg(pl.col("effective_cost").sum().alias("amount"))
        .with_columns(
            team=pl.lit(UNATTRIBUTED_TEAM),
            **{d: pl.lit(None, pl.String) for d in DIMENSIONS[1:]},
            allocation=pl.lit("unattributed"),
            pool=pl.lit(None, pl.String),
            reason=pl.col(TAG_COLUMNS_REASON),
            tag_source=pl.lit(None, pl.String),
        )
    )
    rows = pl.concat([direct, unattributed], how="diagonal_relaxed").with_columns(rules_version=pl.lit(rules_version))
    return (
        rows.select([pl.col(c).cast(t) for c, t in ALLOCATED_SCHEMA.items()])
        .sort(["date", "currency", "allocation", *DIMENSIONS, "tag_source", "reason"], nulls_last=True)
    )


def reconcile(allocated: pl.DataFrame, cost_lines: pl.DataFrame) -> pl.DataFrame:
    """Per day and currency: the bill's effective total, the allocated total and the difference."""
    bill = cost_lines.group_by("date", "currency").agg(pl.col("effective_cost").sum().alias("billed"))
    alloc = allocated.group_by("date", "currency").agg(pl.col("amount").sum().alias("allocated"))
    return (
        bill.join(alloc, on=["date", "currency"], how="full", coalesce=True)
        .with_columns(pl.col("billed", "allocated").fill_null(pl.lit(0).cast(MONEY)))
        .with_columns(difference=pl.col("allocated") - pl.col("billed"))
        .sort("date", "currency")
    )
