"""Team tables add up: per day (and, for team_months, per month) and currency, exactly the money ``allocated_costs`` holds."""

import datetime as dt
from decimal import Decimal

import dagster as dg
import polars as pl

from cost_pipeline.config import Settings
from cost_pipeline.defs.day_checks import DayCheck, Outcome
from cost_pipeline.defs.resources import LakeResource
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.money import MONEY
from cost_pipeline.lib.report_tables import month_of


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


@dg.asset_check(asset="team_months", name="team_months_equal_allocated_costs",
                description="Per month and currency, sum(team_months.total) == sum(allocated_costs.amount) exactly, and the teams' cents add up to the month's total rounded once.")
def team_months_equal_allocated_costs(cost_lake: LakeResource) -> dg.AssetCheckResult:
    """What dashboards and statements show per month starts from team_months: it must hold every cent."""
    lake = cost_lake.lake()
    months = lake.read_table("team_months")
    if months is None:
        return dg.AssetCheckResult(passed=False, description="team_months has not been written yet")
    try:
        want = lake.scan("allocated_costs").group_by(month_of().alias("month"), "currency").agg(pl.col("amount").sum().alias("allocated")).collect()
    except FileNotFoundError as exc:
        return dg.AssetCheckResult(passed=False, description=f"{exc}: team_months holds money allocated_costs does not")
    got = months.group_by("month", "currency").agg(pl.col("total").sum().alias("table"), pl.col("total_cents").sum().alias("cents"))
    both = want.join(got, on=["month", "currency"], how="full", coalesce=True).with_columns(
        pl.col("allocated", "table").fill_null(pl.lit(0).cast(MONEY)), pl.col("cents").fill_null(pl.lit(0).cast(pl.Decimal(38, 2))))
    off = both.filter((pl.col("allocated") != pl.col("table")) | ((pl.col("cents").cast(MONEY) - pl.col("table")).abs() > Decimal("0.005")))
    described = "; ".join(f"{m} {c}: allocated {a}, team_months {t} ({n} in cents)" for m, c, a, t, n in
                          off.sort("month", "currency").select("month", "currency", "allocated", "table", "cents").iter_rows())
    return dg.AssetCheckResult(
        passed=off.is_empty(), metadata={"months": both.height},
        description=described[:2000] or f"{both.height} month × currency total(s) equal allocated_costs",
    )
