"""Preview a rule change: allocations under the current and the proposed rules, side by side.

Reads only ``cost_lines`` and ``usage`` from the lake and writes nothing, so it is safe to run
against production before a backfill.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from cost_pipeline.config import Settings
from cost_pipeline.lib.attribution import allocate_day, attribute_lake_day
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.money import MONEY


def allocate_days(lake: Lake, rules: Settings, days: list[dt.date]) -> pl.DataFrame:
    """``allocated_costs`` under ``rules``, day by day as the asset computes it (a month of 10^7-line
    days is never loaded at once: each day's tag sets are classified, see ``lib/attribution``)."""
    return pl.concat([allocate_day(lake, day, rules, attribute_lake_day(lake, day, rules.tagging, rules.allocation.pools).sums) for day in days])


def diff_allocations(current: pl.DataFrame, proposed: pl.DataFrame) -> pl.DataFrame:
    """Per team, pool and currency: current and proposed amounts and the delta, largest change first."""
    keys = ["team", "pool", "currency"]

    def totals(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.with_columns(pl.col("pool").fill_null("(none)")).group_by(keys).agg(pl.col("amount").sum().alias(name))

    zero = pl.lit(0).cast(MONEY)
    joined = totals(current, "current").join(totals(proposed, "proposed"), on=keys, how="full", coalesce=True)
    return (
        joined.with_columns(pl.col("current", "proposed").fill_null(zero))
        .with_columns(delta=pl.col("proposed") - pl.col("current"))
        .sort(pl.col("delta").abs(), "team", "pool", descending=[True, False, False])
    )


def render_diff(diff: pl.DataFrame, current_version: str, proposed_version: str, show_all: bool = False) -> str:
    lines = [
        f"rules {current_version} -> {proposed_version}",
        f"{'team':<22} {'pool':<16} {'current':>14} {'proposed':>14} {'delta':>13}  currency",
    ]
    shown = diff if show_all else diff.filter(pl.col("delta").round(2) != 0)
    for r in shown.iter_rows(named=True):
        lines.append(
            f"{r['team']:<22} {r['pool']:<16} {r['current']:>14,.2f} {r['proposed']:>14,.2f} {r['delta']:>+13,.2f}  {r['currency']}"
        )
    changed = diff.filter(pl.col("delta").round(2) != 0).height
    lines.append(f"{changed} team/pool row(s) change by at least a cent; nothing was written.")
    return "\n".join(lines)
