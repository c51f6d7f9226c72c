"""How good detection and forecasts are, against the sample generator's ground truth.

An *alert* is an anomaly as a team would receive it: one per anomaly id (an episode), unless
suppressed. It is a true positive when the truth has an injected anomaly for its team starting
within a day of the episode's start; recall counts injected anomalies that got at least one alert.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cost_pipeline.lib.forecast import forecast_month, month_days, team_series


@dataclass(frozen=True)
class Quality:
    alerts: int
    true_alerts: int
    injected: int
    found: int
    team_months: int
    false_by_team_month: dict[tuple[str, str], int]
    mape: float | None
    forecasts: int

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.injected if self.injected else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_alerts(self) -> int:
        return self.alerts - self.true_alerts

    def text(self) -> str:
        worst = max(self.false_by_team_month.values(), default=0)
        lines = [
            f"Anomaly detection against ground truth: {self.injected} injected, {self.alerts} alert(s)",
            f"  precision {self.precision:.2f}  recall {self.recall:.2f}  F1 {self.f1:.2f}",
            f"  false alerts: {self.false_alerts} over {self.team_months} team-month(s) "
            f"({self.false_alerts / max(self.team_months, 1):.2f} per team-month, at most {worst} in one)",
        ]
        if self.mape is None:
            lines.append("Forecast at mid-month: no complete month in the lake to measure it on")
        else:
            lines.append(f"Forecast at mid-month (day 15) vs the month's actual: MAPE {self.mape:.1%} over {self.forecasts} team-month(s)")
        return "\n".join(lines)


def alerts_from(anomalies: pl.DataFrame) -> pl.DataFrame:
    return (
        anomalies.filter(pl.col("suppressed").is_null()).sort("date")
        .group_by("anomaly_id", maintain_order=True).first()
        .select("anomaly_id", "team", "scope", "scope_value", "kind", "episode_start", "date")
    )


def score(anomalies: pl.DataFrame, truth: pl.DataFrame, detail: pl.DataFrame) -> Quality:
    alerts = alerts_from(anomalies)
    truth = truth.with_columns(pl.col("date").cast(pl.String).str.to_date())

    hits = set()
    true_alerts = 0
    false_by: dict[tuple[str, str], int] = {}
    for a in alerts.iter_rows(named=True):
        matched = [i for i, t in enumerate(truth.iter_rows(named=True)) if t["team"] == a["team"] and abs((a["episode_start"] - t["date"]).days) <= 1]
        if matched:
            true_alerts += 1
            hits.update(matched)
        else:
            key = (a["team"], a["episode_start"].strftime("%Y-%m"))
            false_by[key] = false_by.get(key, 0) + 1
    team_months = detail.filter(pl.col("team") != "__unattributed__").select("team", pl.col("date").dt.strftime("%Y-%m")).unique().height
    mape, count = forecast_error(detail)
    return Quality(alerts.height, true_alerts, truth.height, len(hits), team_months, false_by, mape, count)


def forecast_error(detail: pl.DataFrame) -> tuple[float | None, int]:
    """Mean absolute percentage error of the day-15 forecast, over team-months the lake holds whole."""
    days = set(detail["date"].unique().to_list())
    errors = []
    for values in team_series(detail).values():
        months = sorted({d.replace(day=1) for d in values})
        for first in months:
            whole = month_days(first)
            if not all(d in days for d in whole):
                continue
            actual = sum((values[d] for d in whole), start=0)
            if actual:
                errors.append(abs(float(forecast_month(values, first.replace(day=15)) - actual) / float(actual)))
    return (sum(errors) / len(errors), len(errors)) if errors else (None, 0)
