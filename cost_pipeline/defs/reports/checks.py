"""Team tables add up: per day and currency, exactly the money ``allocated_costs`` holds."""

import datetime as dt

import dagster as dg
import polars as pl

from cost_pipeline.config import Settings
from cost_pipeline.defs.day_checks import DayCheck, Outcome
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.money import MONEY


def _adds_up(table: str, column: str):
    def evaluate(lake: Lake, settings: Settings, day: dt.date) -> Outcome:
        want = lake.scan_days("allocated_costs", [day]).group_by("currency").agg(pl.col("amount").sum().alias("allocated"))
        got = lake.scan_days(table, [day]).group_by("currency").agg(pl.col(column).sum().alias("table"))
        both = (want.join(got, on="currency", how="full", coalesce=True).collect()
                .with_columns(pl.col("allocated", "table").fill_null(pl.lit(0).cast(MONEY))))
        off = both.filter(pl.col("allocated") != pl.col("table"))
        totals = {f"total ({c})": dg.MetadataValue.float(float(round(t, 2))) for c, t in both.select("currency", "table").sort("currency").iter_rows()}
        if off.is_empty():
            return True, totals, f"{table}.{column} equals allocated_costs in {both.height} currency(ies)"
        diffs = ", ".join(f"{c} {t - a:+}" for c, a, t in off.select("currency", "allocated", "table").iter_rows())
        return False, totals, f"{table}.{column} differs from allocated_costs: {diffs}"

    return evaluate


TEAM_DAILY_ADDS_UP = DayCheck(
    asset="team_daily_costs", name="team_daily_costs_equal_allocated_costs", evaluate=_adds_up("team_daily_costs", "total"),
    description="Per day and currency, sum(team_daily_costs.total) == sum(allocated_costs.amount), exactly.",
)
TEAM_DETAIL_ADDS_UP = DayCheck(
    asset="team_cost_detail", name="team_cost_detail_equals_allocated_costs", evaluate=_adds_up("team_cost_detail", "amount"),
    description="Per day and currency, sum(team_cost_detail.amount) == sum(allocated_costs.amount), exactly.",
)
