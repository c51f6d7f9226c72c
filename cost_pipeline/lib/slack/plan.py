"""Which messages a day produces: anomaly and budget alerts for every day, digests for the last one.

A backfill of past days therefore alerts (once per anomaly, by its id) but posts one digest per
team, for the newest day, not one per day of the range.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import altair as alt
import polars as pl
import vl_convert

from cost_pipeline.config import Settings
from cost_pipeline.lib.allocate import UNATTRIBUTED_TEAM
from cost_pipeline.lib.forecast import forecast_month, forecasts, team_series
from cost_pipeline.lib.report_tables import account_teams
from cost_pipeline.lib.slack.messages import Digest, Message, anomaly_alert, budget_alert, platform_digest, team_digest

SEVERITY_RANK = {"medium": 0, "high": 1, "critical": 2}


def _channel(settings: Settings, team: str) -> str | None:
    entry = settings.tagging.teams.get(team)
    return entry.slack_channel if entry else None


def _dashboard(settings: Settings, page: str) -> str | None:
    base = settings.reports.dashboard_url
    return f"{base.rstrip('/')}/dashboards/{page}.html" if base else None


def alerts(day: dt.date, anomalies: pl.DataFrame, detail: pl.DataFrame, settings: Settings) -> list[Message]:
    out = []
    floor = SEVERITY_RANK[settings.alerts.platform_min_severity]
    for a in anomalies.filter(pl.col("suppressed").is_null()).iter_rows(named=True):
        channel = _channel(settings, a["team"])
        if channel:
            out.append(anomaly_alert(a, a["team"], channel))
        if SEVERITY_RANK[a["severity"]] >= floor:
            out.append(anomaly_alert(a, a["team"], settings.slack.platform_channel, kind="platform_alert"))
    budgets = {t: Decimal(str(c.monthly_budget)) for t, c in settings.alerts.teams.items() if c.monthly_budget}
    if budgets:
        for f in forecasts(detail.filter(pl.col("date") <= day), day, budgets).filter(pl.col("over_budget") & ~pl.col("actual_over_budget")).iter_rows(named=True):
            channel = _channel(settings, f["team"])
            if channel:
                out.append(budget_alert(f["team"], day, f["currency"], f["forecast"], f["budget"], f["month_to_date"], channel))
    return out


def _chart(team_rows: pl.DataFrame, day: dt.date) -> bytes:
    recent = (
        team_rows.filter(pl.col("date") > day - dt.timedelta(days=30)).group_by("date", "allocation").agg(pl.col("amount").sum().cast(pl.Float64))
        .with_columns(pl.col("date").dt.strftime("%Y-%m-%d")).sort("date")
    )
    spec = alt.Chart(alt.InlineData(values=recent.to_dicts())).mark_bar().encode(
        x=alt.X("date:T", title=None), y=alt.Y("amount:Q", title="Cost"), color=alt.Color("allocation:N", title=None),
    ).properties(width=520, height=200, title="Daily cost, last 30 days").to_dict()
    return vl_convert.vegalite_to_png(spec, scale=1)


def digests(day: dt.date, detail: pl.DataFrame, anomalies: pl.DataFrame, untagged: pl.DataFrame, settings: Settings,
            charts: bool = True) -> list[Message]:
    out = []
    series = team_series(detail)
    owners = dict(account_teams(settings.tagging).iter_rows())
    month_start = day.replace(day=1)
    prev_start = (month_start - dt.timedelta(days=1)).replace(day=1)
    prev_end = min(prev_start.replace(day=1) + dt.timedelta(days=day.day - 1), month_start - dt.timedelta(days=1))
    day_rows = detail.filter(pl.col("date") == day)
    for team in sorted(t for t in day_rows["team"].unique().to_list() if t != UNATTRIBUTED_TEAM):
        channel = _channel(settings, team)
        if not channel:
            continue
        mine = detail.filter(pl.col("team") == team)
        currency = mine.group_by("currency").agg(pl.col("amount").sum()).sort("amount", descending=True)["currency"][0]
        mine = mine.filter(pl.col("currency") == currency)
        today = mine.filter(pl.col("date") == day)
        mtd = mine.filter(pl.col("date").is_between(month_start, day))
        projects = today.group_by(pl.col("project").fill_null("(no project)")).agg(pl.col("amount").sum()).rows()
        experiments = mtd.filter(pl.col("experiment_id").is_not_null()).group_by("experiment_id").agg(pl.col("amount").sum()).rows()
        accounts = [a for a, t in owners.items() if t == team]
        budget = settings.alerts.teams.get(team)
        message = team_digest(Digest(
            team=team, day=day, currency=currency, day_total=today["amount"].sum() or Decimal(0), day_projects=projects,
            month_to_date=mtd["amount"].sum() or Decimal(0),
            last_month_same_days=mine.filter(pl.col("date").is_between(prev_start, prev_end))["amount"].sum() or Decimal(0),
            forecast=forecast_month(series[(team, currency)], day),
            budget=Decimal(str(budget.monthly_budget)) if budget and budget.monthly_budget else None,
            top_experiments=experiments, month_total=mtd["amount"].sum() or Decimal(0),
            anomalies=anomalies.filter((pl.col("team") == team) & pl.col("suppressed").is_null()).to_dicts(),
            untagged=untagged.filter((pl.col("date") == day) & pl.col("account_id").is_in(accounts) & (pl.col("currency") == currency))["amount"].sum() or Decimal(0),
            dashboard=_dashboard(settings, team),
        ), channel)
        out.append(Message(**{**message.__dict__, "chart": _chart(mine, day) if charts else None}))
    if day_rows.height:
        currency = day_rows.group_by("currency").agg(pl.col("amount").sum()).sort("amount", descending=True)["currency"][0]
        rows = day_rows.filter(pl.col("currency") == currency)
        pools = rows.filter(pl.col("pool").is_not_null()).group_by("pool").agg(pl.col("amount").sum()).rows()
        idle = rows.filter(pl.col("project") == "__idle__")["amount"].sum() or Decimal(0)
        out.append(platform_digest(
            day, currency, rows["amount"].sum(), rows.group_by("team").agg(pl.col("amount").sum()).rows(),
            untagged.filter((pl.col("date") == day) & (pl.col("currency") == currency))["amount"].sum() or Decimal(0),
            pools, idle, settings.slack.platform_channel, _dashboard(settings, "platform"),
        ))
    return out
