"""Spend anomalies per day (team, team × project, team × service): spikes, sustained level shifts and
new spend, with their causes.

Baseline: the median of the same weekday in the previous four weeks (weekly seasonality), or of the
previous 14 days when fewer than three such weekdays exist; scale: the median absolute deviation of
the previous 28 days. Both are medians, so an earlier anomaly barely moves them. A day is flagged
only when the increase passes the absolute *and* the relative threshold *and* the robust z-score; a
scope with a zero baseline is *new spend*. Consecutive flagged days form one episode with one stable
id, so a level shift is one anomaly (``level_shift`` from its third day), not an alert a day.

Team × project and team × service anomalies on a day the team itself is flagged are folded into the team's anomaly as
drivers, so one event is one alert. A day computed under other rules than its baseline is kept but
``suppressed`` (the change is the rules', not the spend's).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import statistics
from dataclasses import dataclass
from decimal import Decimal

import polars as pl

from cost_pipeline.lib.allocate import UNATTRIBUTED_TEAM
from cost_pipeline.lib.money import MONEY

ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "anomaly_id": pl.String(),
    "team": pl.String(),
    "scope": pl.String(),  # team | project | service
    "scope_value": pl.String(),  # the project or service for those scopes
    "kind": pl.String(),  # spike | level_shift | new_spend
    "episode_start": pl.Date(),
    "currency": pl.String(),
    "observed": MONEY,
    "expected": MONEY,
    "impact": MONEY,  # observed - expected
    "impact_pct": pl.Float64(),  # null for new spend
    "score": pl.Float64(),
    "severity": pl.String(),  # medium | high | critical
    "drivers": pl.String(),  # JSON: [{dimension, value, delta, share}]
    "suppressed": pl.String(),  # why it is not alerted (rules change), or null
}
SEVERITIES = ["medium", "high", "critical"]


@dataclass(frozen=True)
class Thresholds:
    min_delta: float = 250.0  # currency units a day
    min_ratio: float = 0.5  # 50 % above the baseline
    z: float = 5.0
    weeks: int = 4
    min_history: int = 14
    shift_days: int = 3
    gap: int = 2  # unflagged days inside one episode


def _history(values: dict[dt.date, Decimal], day: dt.date, t: Thresholds) -> tuple[Decimal, float] | None:
    """(expected, scale) for ``day`` from the days before it, or None without enough history."""
    before = [day - dt.timedelta(days=i) for i in range(1, t.weeks * 7 + 1)]
    known = [values[d] for d in before if d in values]
    if len(known) < t.min_history:
        return None
    weekdays = [values[d] for d in before[6 :: 7] if d in values]
    recent = [values[d] for d in before[:14] if d in values]
    expected = statistics.median(weekdays) if len(weekdays) >= 3 else statistics.median(recent)
    center = statistics.median(known)
    mad = statistics.median([abs(v - center) for v in known])
    scale = max(1.4826 * float(mad), 0.05 * float(expected), 0.01)
    return Decimal(expected), scale


def _exceeds(observed: Decimal, expected: Decimal, scale: float, t: Thresholds) -> bool:
    delta = float(observed - expected)
    if expected <= 0:
        return delta >= t.min_delta
    return delta >= t.min_delta and delta / float(expected) >= t.min_ratio and delta / scale >= t.z


def _series(frame: pl.DataFrame, keys: list[str], calendar: list[dt.date]) -> dict[tuple, dict[dt.date, Decimal]]:
    sums = frame.drop_nulls(keys).group_by(*keys, "date").agg(pl.col("amount").sum())
    out: dict[tuple, dict[dt.date, Decimal]] = {}
    for row in sums.iter_rows(named=True):
        out.setdefault(tuple(row[k] for k in keys), {})[row["date"]] = row["amount"]
    for series in out.values():  # a day in the lake without cost for the scope is a zero, not a gap
        for d in calendar:
            series.setdefault(d, Decimal(0))
    return out


def _flagged(values: dict[dt.date, Decimal], day: dt.date, t: Thresholds) -> bool:
    base = _history(values, day, t) if day in values else None
    return base is not None and _exceeds(values[day], base[0], base[1], t)


def _episode_start(values: dict[dt.date, Decimal], day: dt.date, t: Thresholds) -> dt.date:
    """The first day of the run of flagged days ending at ``day``; gaps of up to ``gap`` unflagged days
    do not end an episode, so a noisy level shift stays one anomaly."""
    start = day
    while True:
        earlier = [start - dt.timedelta(days=i) for i in range(1, t.gap + 2)]
        flagged = [d for d in earlier if _flagged(values, d, t)]
        if not flagged:
            return start
        start = min(flagged)


def _severity(delta: float, t: Thresholds) -> str:
    return "critical" if delta >= 10 * t.min_delta else "high" if delta >= 3 * t.min_delta else "medium"


DRIVER_DIMENSIONS = ("project", "workload_type", "service", "experiment_id", "pool")


def _drivers(rows: pl.DataFrame, day: dt.date, baseline_days: list[dt.date], delta: Decimal) -> str:
    """Each dimension value's change against its own median on the baseline days, by share of the delta.

    Only the day's and the baseline days' sums are read (a value absent from all of them changes by 0):
    a DataFrame per value of each dimension took 0.1 s an anomaly, most of a backfill's detection."""
    out = []
    for rank, dim in enumerate(DRIVER_DIMENSIONS):
        per = (rows.filter(pl.col(dim).is_not_null() & pl.col("date").is_in([day, *baseline_days]))
               .group_by(dim, "date").agg(pl.col("amount").sum()))
        amounts: dict = {}
        for value, date, amount in per.iter_rows():
            amounts.setdefault(value, {})[date] = amount
        for value, by_day in amounts.items():
            now = by_day.get(day, Decimal(0))
            base = statistics.median([by_day.get(d, Decimal(0)) for d in baseline_days]) if baseline_days else Decimal(0)
            change = now - Decimal(base)
            if delta and change > 0:
                out.append((rank, str(value), {"dimension": dim, "value": value, "delta": round(float(change), 2), "share": round(float(change / delta), 4)}))
    out.sort(key=lambda d: (-d[2]["delta"], d[0], d[1]))  # ties in a fixed order: the same JSON on every run
    return json.dumps([d for _, _, d in out[:5]])


def anomaly_id(team: str, scope: str, value: str | None, currency: str, start: dt.date) -> str:
    return hashlib.sha256(f"{team}|{scope}|{value or ''}|{currency}|{start}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DailySums:
    """The scopes' daily sums (a few rows a day: ~50 at 1 M lines a day instead of ~24,000 detail rows)
    and each day's rules version, summed once for every day a caller detects (:func:`daily_sums`):
    summing the 35 days before each day of a backfill again was most of its 0.17 s a day."""

    scopes: pl.DataFrame
    rules: dict[dt.date, str]


def daily_sums(detail: pl.DataFrame) -> DailySums:
    detail = detail.filter(pl.col("team") != UNATTRIBUTED_TEAM)
    rules = dict(detail.group_by("date").agg(pl.col("rules_version").unique().sort().str.join("+")).iter_rows())
    return DailySums(detail.group_by("date", "team", "currency", "project", "service").agg(pl.col("amount").sum()), rules)


def detect(detail: pl.DataFrame, day: dt.date, thresholds: dict[str, Thresholds] | None = None, default: Thresholds = Thresholds(),
           sums: DailySums | None = None) -> pl.DataFrame:
    """Anomalies of ``day`` from ``team_cost_detail`` rows of that day and the four weeks before it.
    ``sums``: :func:`daily_sums` of rows holding at least those days (the same rows for those days)."""
    thresholds = thresholds or {}
    detail = detail.filter((pl.col("team") != UNATTRIBUTED_TEAM) & (pl.col("date") <= day))
    calendar = sorted(detail["date"].unique().to_list())
    if day not in calendar:
        return pl.DataFrame(schema=ANOMALY_SCHEMA)
    sums = sums or daily_sums(detail)
    rules = {d: sums.rules[d] for d in calendar}
    scopes = sums.scopes.filter(pl.col("date").is_in(calendar))  # the days a run of this day alone sums
    found: list[dict] = []
    active_teams: set[tuple[str, str]] = set()  # teams in an episode: their projects' anomalies are drivers, not alerts
    for scope, keys in (("team", ["team", "currency"]), ("project", ["team", "currency", "project"]), ("service", ["team", "currency", "service"])):
        for key, values in _series(scopes, keys, calendar).items():
            team, currency = key[0], key[1]
            t = thresholds.get(team, default)
            base = _history(values, day, t)
            if base is None or not _exceeds(values[day], base[0], base[1], t):
                continue
            expected, scale = base
            scale = max(scale, t.min_delta) if expected <= 0 else scale  # new spend: scored against the absolute threshold
            start = _episode_start(values, day, t)
            delta = values[day] - expected
            kind = "new_spend" if expected <= 0 else "level_shift" if (day - start).days + 1 >= t.shift_days else "spike"
            active_teams.add((team, currency)) if scope == "team" and (day - start).days <= t.gap + 1 else None
            window = [day - dt.timedelta(days=i) for i in range(1, t.weeks * 7 + 1)]
            baseline_rules = [rules[d] for d in window if d in rules]
            majority = max(set(baseline_rules), key=baseline_rules.count) if baseline_rules else rules[day]
            scoped = detail.filter((pl.col("team") == team) & (pl.col("currency") == currency) & (pl.col(scope).eq_missing(key[2]) if scope != "team" else pl.lit(True)))
            found.append({
                "date": day, "anomaly_id": anomaly_id(team, scope, key[2] if scope != "team" else None, currency, start),
                "team": team, "scope": scope, "scope_value": key[2] if scope != "team" else None, "kind": kind, "episode_start": start,
                "currency": currency, "observed": values[day], "expected": expected, "impact": delta,
                "impact_pct": None if expected <= 0 else float(delta / expected), "score": round(float(delta) / scale, 2),
                "severity": _severity(float(delta), t),
                "drivers": _drivers(scoped, day, [d for d in window[6::7] if d in values] or window[:14], delta),
                "suppressed": None if rules[day] == majority else f"rules version changed ({majority} -> {rules[day]})",
            })
    for scope, keys in (("team", ["team", "currency"]),):
        for (team, currency), values in _series(scopes, keys, calendar).items():
            t = thresholds.get(team, default)
            if any(_flagged(values, day - dt.timedelta(days=i), t) for i in range(0, t.gap + 2)):
                active_teams.add((team, currency))
    frame = pl.DataFrame(found, schema=ANOMALY_SCHEMA)
    active = [f"{team}|{currency}" for team, currency in active_teams]
    folded = frame.filter((pl.col("scope") == "team") | ~pl.concat_str("team", "currency", separator="|").is_in(active))
    return folded.sort("team", "scope", "scope_value", nulls_last=True)
