"""Everything under ``reports/`` besides the summary: dashboards and statements, rendered in memory first.

Rendering never writes: callers get ``{relative path: bytes}`` and write only once every file rendered,
so a bad value fails the step with the previous files intact. File names come from the team registry's
safe names and months, never from tag values.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cost_pipeline.config import Settings
from cost_pipeline.lib.allocate import UNATTRIBUTED_TEAM
from cost_pipeline.lib.billing.totals import held_totals
from cost_pipeline.lib.cents import with_cents
from cost_pipeline.lib.dashboards import Freshness, platform_page, team_file_name, team_page
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.report_tables import driver_text, experiment_costs, month_of, pool_shares, team_months, untagged_by_account
from cost_pipeline.lib.statement_files import render_csv, render_html, statement_file_stem
from cost_pipeline.lib.statements import ClosedMonth, closed_months, in_month, months_in, next_open_month, statement


@dataclass(frozen=True)
class ReportTables:
    detail: pl.DataFrame
    months: pl.DataFrame
    pools: pl.DataFrame
    untagged: pl.DataFrame
    compliance: pl.DataFrame
    freshness: Freshness

    @property
    def experiments(self) -> pl.DataFrame:
        """Per training run (computed when asked: the report tables need it, the dashboards do not)."""
        return experiment_costs(self.detail)


def load_tables(lake: Lake, settings: Settings) -> ReportTables:
    detail = lake.scan("team_cost_detail").collect()
    daily = lake.scan("team_daily_costs").collect()
    untagged = untagged_by_account(lake.scan("untagged_spend").select("date", "account_id", "reason", "amount", "currency"), settings.tagging)
    # each day's finality from the per-day totals (a day's lines are read again only when its file changed)
    finality = held_totals(lake).group_by("date").agg(pl.col("is_final").all()).sort("date")
    final_days = finality.filter(pl.col("is_final"))["date"]
    freshness = Freshness(
        last_day=str(detail["date"].max()),
        last_final_day=str(final_days.max()) if final_days.len() else None,
        estimated_days=int((~finality["is_final"]).sum()),
        rules_versions=sorted(detail["rules_version"].unique().to_list()),
    )
    spend = daily.with_columns(month=month_of()).group_by("month", "currency").agg(pl.col("total").sum())
    quarantined = untagged.group_by("month", "currency").agg(pl.col("amount").sum().alias("untagged"))
    compliance = (
        spend.join(quarantined, on=["month", "currency"], how="left").with_columns(pl.col("untagged").fill_null(0))
        .with_columns(untagged_share=(pl.col("untagged").cast(pl.Float64) / pl.col("total").cast(pl.Float64)).fill_nan(0.0))
        .sort("month", "currency")
    )
    compliance = with_cents(with_cents(compliance, "total", []), "untagged", [])
    return ReportTables(
        detail=detail,
        months=team_months(daily),
        pools=pool_shares(detail, settings.allocation.pools),
        untagged=untagged,
        compliance=compliance,
        freshness=freshness,
    )


def dashboard_files(tables: ReportTables, settings: Settings) -> dict[str, bytes]:
    drivers = pl.DataFrame({"pool": [p.name for p in settings.allocation.pools], "driver": [driver_text(p) for p in settings.allocation.pools]},
                           schema={"pool": pl.String, "driver": pl.String})
    detail = tables.detail
    pool_totals = (
        tables.detail.filter(pl.col("pool").is_not_null()).with_columns(month=month_of())
        .group_by("month", "pool", "currency").agg(pl.col("amount").sum()).join(drivers, on="pool", how="left")
    )
    teams = sorted(t for t in detail["team"].unique().to_list() if t != UNATTRIBUTED_TEAM)
    files = {}
    for team in teams:
        rows = detail.filter(pl.col("team") == team).join(drivers, on="pool", how="left")  # joined per team: a year's detail is 8.6 M rows
        paid = rows.filter(pl.col("allocation") == "shared")["pool"].unique().to_list()
        untagged = tables.untagged.filter(pl.col("team") == team)
        files[f"dashboards/{team_file_name(team)}"] = team_page(
            team, rows, pool_totals.filter(pl.col("pool").is_in(paid)), untagged, tables.freshness
        ).encode()
    monthly = tables.detail.lazy().group_by(pl.col("date").dt.month_start(), "team", "allocation", "currency").agg(
        pl.col("amount").sum()).collect(engine="streaming").with_columns(**{c: pl.lit(None, pl.String) for c in ["project", "workload_type", "environment", "experiment_id", "pool"]})
    files["dashboards/platform.html"] = platform_page(
        teams, monthly, tables.pools.with_columns(pl.col("idle").round(2)), tables.untagged, tables.compliance, tables.freshness, tables.months
    ).encode()
    return files


@dataclass(frozen=True)
class Statements:
    files: dict[str, bytes]  # relative path -> content; closed months only where the file is missing
    summary: pl.DataFrame  # month, currency, status, statements_cents, adjustments_cents, teams


def statement_files(lake: Lake, detail: pl.DataFrame, settings: Settings, only: str | None = None) -> Statements:
    closed = closed_months(lake)
    months = sorted(set(months_in(detail)) | {next_open_month(m, set(closed)) for m in closed} | set(closed))
    drivers = {p.name: driver_text(p) for p in settings.allocation.pools}
    files: dict[str, bytes] = {}
    summary = []
    for month in [m for m in months if only in (None, m)]:
        record: ClosedMonth | None = closed.get(month)
        lines = record.lines if record else statement(month, detail, closed)
        if lines.is_empty():
            continue
        rules = ", ".join(record.rules_versions if record else sorted(detail.filter(in_month(month))["rules_version"].unique().to_list()))
        for (team,), team_lines in lines.group_by("team", maintain_order=True):
            stem = f"reports/statements/{month}/{statement_file_stem(team)}"
            rendered = {
                f"{stem}.csv": render_csv(team_lines, drivers).encode(),
                f"{stem}.html": render_html(team_lines, drivers, settings.reports.mode, record.closed_at if record else None, rules).encode(),
            }
            for path, body in rendered.items():
                # a closed statement is the snapshot's render, byte for byte: written when missing or not yet that render
                if record is None or lake.read_file(*_split(path)) != body:
                    files[path] = body
        for (currency,), group in lines.group_by("currency", maintain_order=True):
            summary.append({
                "month": month, "currency": currency, "status": f"closed {record.closed_at}" if record else "open",
                "statements": group.group_by("team").agg(pl.col("team_cents").first())["team_cents"].sum(),
                "adjustments": group.filter(pl.col("line_type") == "adjustment")["amount_cents"].sum(),
                "teams": group["team"].n_unique(),
            })
    return Statements(files, pl.DataFrame(summary, schema={"month": pl.String, "currency": pl.String, "status": pl.String,
                                                           "statements": pl.Decimal(38, 2), "adjustments": pl.Decimal(38, 2), "teams": pl.Int64}))


def _split(path: str) -> tuple[str, None, str]:
    folder, _, name = path.rpartition("/")
    return folder, None, name
