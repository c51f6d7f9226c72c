"""Per-team views of allocated costs, rounded for people only at the very end."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from cost_pipeline.lib.money import MONEY, largest_remainder

KINDS = ["direct", "shared", "unattributed"]


def team_daily_costs(allocated: pl.DataFrame) -> pl.DataFrame:
    """One row per day, team and currency: exact amounts by allocation kind, and a cent total.

    ``total_cents`` is rounded by largest remainder within each day and currency, so the teams'
    rounded totals add up to the rounded day total.
    """
    zero = pl.lit(0).cast(MONEY)
    rows = (
        allocated.group_by("date", "team", "currency")
        .agg(
            *[pl.col("amount").filter(pl.col("allocation") == k).sum().alias(k) for k in KINDS],
            pl.col("amount").sum().alias("total"),
        )
        .with_columns([pl.col(k).fill_null(zero) for k in [*KINDS, "total"]])
        .sort("date", "currency", "team")
    )
    rounded: list[Decimal] = []
    for _, group in rows.group_by("date", "currency", maintain_order=True):
        rounded.extend(largest_remainder(group["total"].to_list()))
    return rows.with_columns(total_cents=pl.Series(rounded, dtype=pl.Decimal(38, 2)))
