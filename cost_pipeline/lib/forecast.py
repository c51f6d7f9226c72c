"""Month-end forecasts and budget alerts from the partitioned history.

Model: month to date plus, for each remaining day, the median of the same weekday in the four weeks
before the forecast day (the median of the last 14 days when fewer than two exist). It is the seasonal
naive forecast made robust: no fitting, no dependency, nothing to tune per team, and one-day spikes
do not leak into the rest of the month. ``cost-pipeline evaluate`` measures its error at mid-month
(MAPE); see the README for the figures on the sample data.
"""

from __future__ import annotations

import calendar
import datetime as dt
import statistics
from decimal import Decimal

import polars as pl

from cost_pipeline.lib.allocate import UNATTRIBUTED_TEAM


def month_days(day: dt.date) -> list[dt.date]:
    last = calendar.monthrange(day.year, day.month)[1]
    return [day.replace(day=i) for i in range(1, last + 1)]


def forecast_month(values: dict[dt.date, Decimal], as_of: dt.date) -> Decimal:
    """The month's total as expected on ``as_of``: actual to date plus the expected rest."""
    days = month_days(as_of)
    total = sum((values.get(d, Decimal(0)) for d in days if d <= as_of), Decimal(0))
    known = sorted(d for d in values if d <= as_of)
    recent = [values[d] for d in known[-14:]]
    for d in (d for d in days if d > as_of):
        weekdays = [values[w] for w in (d - dt.timedelta(days=7 * k) for k in range(1, 9)) if w <= as_of and w in values][:4]
        if len(weekdays) >= 2:
            total += Decimal(statistics.median(weekdays))
        elif recent:
            total += Decimal(statistics.median(recent))
    return total


def team_series(detail: pl.DataFrame) -> dict[tuple[str, str], dict[dt.date, Decimal]]:
    """(team, currency) -> day -> cost, zero on lake days without cost."""
    calendar_days = detail["date"].unique().to_list()
    sums = detail.filter(pl.col("team") != UNATTRIBUTED_TEAM).group_by("team", "currency", "date").agg(pl.col("amount").sum())
    out: dict[tuple[str, str], dict[dt.date, Decimal]] = {}
    for team, currency, day, amount in sums.iter_rows():
        out.setdefault((team, currency), {})[day] = amount
    for series in out.values():
        for d in calendar_days:
            series.setdefault(d, Decimal(0))
    return out


def forecasts(detail: pl.DataFrame, as_of: dt.date, budgets: dict[str, Decimal]) -> pl.DataFrame:
    """Per team: month to date, the month-end forecast, the budget and whether the forecast crosses it."""
    rows = []
    for (team, currency), values in sorted(team_series(detail).items()):
        if as_of not in values:
            continue
        mtd = sum((v for d, v in values.items() if d.month == as_of.month and d.year == as_of.year and d <= as_of), Decimal(0))
        forecast = forecast_month(values, as_of)
        budget = budgets.get(team)
        rows.append({
            "date": as_of, "team": team, "currency": currency, "month": as_of.strftime("%Y-%m"), "month_to_date": mtd,
            "forecast": forecast, "budget": budget,
            "over_budget": budget is not None and forecast > budget,
            "actual_over_budget": budget is not None and mtd > budget,
        })
    return pl.DataFrame(rows, schema={
        "date": pl.Date, "team": pl.String, "currency": pl.String, "month": pl.String, "month_to_date": pl.Decimal(38, 12),
        "forecast": pl.Decimal(38, 12), "budget": pl.Decimal(38, 12), "over_budget": pl.Boolean, "actual_over_budget": pl.Boolean,
    })
