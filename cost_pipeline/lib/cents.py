"""Cent columns for tables people read: rounded once, by largest remainder, level by level.

A report row's parts (direct, shared, unattributed) must add up to its total, and the rows' totals to
the whole they belong to (a day, a month, a bill). Rounding each column on its own breaks both, so
the whole is rounded first and each level below is rounded to the level above it.
"""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from cost_pipeline.lib.money import largest_remainder

CENTS = pl.Decimal(38, 2)


def with_cents(frame: pl.DataFrame, total: str, within: list[str], parts: list[str] = (), parent: str | None = None) -> pl.DataFrame:
    """Adds ``<total>_cents`` (largest remainder over the rows of each ``within`` group, adding up to the
    group's rounded sum, or to the group's ``parent`` cents column when given) and ``<part>_cents``
    for each part (largest remainder within the row, adding up to the row's total cents).

    Rows keep their order; the frame is small (a report), so this loops over groups in Python.
    """
    frame = frame.with_row_index("_row")
    totals: dict[int, Decimal] = {}
    for _, group in frame.group_by(within, maintain_order=True) if within else [((), frame)]:
        target = group[parent][0] if parent else None
        for row, cents in zip(group["_row"].to_list(), largest_remainder(group[total].to_list(), total=target)):
            totals[row] = cents
    rows = frame["_row"].to_list()
    out = frame.with_columns(pl.Series(f"{total}_cents", [totals[r] for r in rows], dtype=CENTS))
    if parts:
        split = [
            largest_remainder([values[p] for p in parts], total=values[f"{total}_cents"])
            for values in out.select(*parts, f"{total}_cents").iter_rows(named=True)
        ]
        out = out.with_columns([pl.Series(f"{p}_cents", [s[i] for s in split], dtype=CENTS) for i, p in enumerate(parts)])
    return out.drop("_row")
