"""Self-contained HTML dashboards: one per team, one for the platform operators.

A page opens from disk with no network: the Vega runtime (vl-convert's bundle) and the data are
embedded, and its Content-Security-Policy allows no connection at all. A team's page embeds only that
team's rows (plus the totals of the shared pools it pays into, to show its share); the spec sits in a
``<script type="application/json">`` whose ``<``, ``>`` and ``&`` are escaped, so no tag value can end
the script.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import altair as alt
import polars as pl
import vl_convert

from cost_pipeline.lib.allocate import UNATTRIBUTED_TEAM
from cost_pipeline.lib.dashboard_spec import FILTERS, exact_cents, experiment_rows, rows_for_browser, team_spec
from cost_pipeline.lib.safe_output import JsonText, file_stem, html_text, script_json

CSP = "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True)
class Freshness:
    last_day: str
    last_final_day: str | None
    estimated_days: int
    rules_versions: list[str]

    def html(self) -> str:
        final = f"last final (invoiced) day {html_text(self.last_final_day)}" if self.last_final_day else "no final (invoiced) day yet"
        return (f"Data through {html_text(self.last_day)}; {final}; {self.estimated_days} day(s) are estimates the provider may restate. "
                f"Rules version {html_text(', '.join(self.rules_versions))}.")


@functools.cache
def _runtime() -> str:
    bundle = vl_convert.javascript_bundle(vl_version=alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0])
    return bundle.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def page(title: str, header: str, spec: dict | None, sections: str) -> str:
    embed = ""
    if spec is not None:
        embed = (
            f"<div id='filters' class='vega-bindings'></div><div id='vis'></div><script type='application/json' id='spec'>{script_json(spec)}</script>"
            "<script>vegaEmbed('#vis', JSON.parse(document.getElementById('spec').textContent), {renderer: 'svg', actions: false})"
            ".catch(function (e) { document.getElementById('vis').textContent = 'The charts failed to render: ' + e; console.error(e); });</script>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\"><title>{title}</title><style>{_CSS}</style>"
        f"<script>{_runtime() if spec is not None else ''}</script></head><body>{header}{embed}{sections}</body></html>\n"
    )


def table(rows: list[dict], columns: list[tuple[str, str]], numeric: set[str] = frozenset()) -> str:
    if not rows:
        return "<p class='empty'>None.</p>"
    head = "".join(f"<th class='{'num' if c in numeric else ''}'>{html_text(label)}</th>" for c, label in columns)
    body = "".join(
        "<tr>" + "".join(f"<td class='{'num' if c in numeric else ''}'>{_cell(r[c])}</td>" for c, _ in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.1%}"
    if hasattr(value, "quantize"):
        return f"{value:,.2f}"
    return html_text(value)


def team_page(team: str, detail: pl.DataFrame, pool_totals: pl.DataFrame, untagged: pl.DataFrame, freshness: Freshness) -> str:
    """``detail``: this team's rows only (with ``driver``); ``pool_totals``: month × pool × currency totals
    of the pools the team pays into; ``untagged``: quarantined spend of the team's accounts."""
    # the charts' rows without experiments (the experiments table has its own, per month)
    summed = detail.group_by("date", "allocation", "currency", "project", "workload_type", "environment", "pool", "driver").agg(pl.col("amount").sum())
    mine = rows_for_browser(summed.sort("date", "allocation", "project", "workload_type", "environment", "pool", nulls_last=True), "team")
    pools = rows_for_browser(
        pool_totals.with_columns(date=pl.col("month").str.to_date("%Y-%m"), team=pl.lit(team), allocation=pl.lit("shared"),
                                 project=pl.lit(None, pl.String), workload_type=pl.lit(None, pl.String), environment=pl.lit(None, pl.String)),
        "pool",
    ).with_columns(month=pl.col("day").str.slice(0, 7))
    rows = JsonText(pl.concat([mine, pools]).write_json())
    options = {n: sorted(mine[n].unique().to_list()) for n in FILTERS}
    by_currency = detail.group_by("currency").agg(pl.col("amount").sum()).sort("amount", descending=True)["currency"].to_list()
    spec = team_spec(rows, JsonText(experiment_rows(detail).write_json()), options, by_currency or ["USD"], max(options["month"]) if options["month"] else None)
    untagged_rows = untagged.select("month", "account_id", "reason", "lines", "amount_cents", "currency").to_dicts()
    header = (
        f"<header><h1>Team {html_text(team)}: cloud costs</h1><p class='fresh'>{freshness.html()}</p>"
        "<p>Every figure follows the filters below and is exact to the cent (rounded once, half to even). "
        "<a href='platform.html'>Platform dashboard</a></p></header>"
    )
    sections = (
        "<section><h2>Untagged spend in your accounts</h2><p>Quarantined lines (failing the tag schema) billed to accounts that "
        "belong to this team. They count as unattributed until tagged; they have no project, so the filters do not apply.</p>"
        + table(untagged_rows, [("month", "Month"), ("account_id", "Account"), ("reason", "Reason"), ("lines", "Lines"),
                                ("amount_cents", "Amount"), ("currency", "Currency")], {"lines", "amount_cents"})
        + "</section>"
    )
    return page(f"Team {html_text(team)}: cloud costs", header, spec, sections)


def platform_page(teams: list[str], months: pl.DataFrame, pools: pl.DataFrame, untagged: pl.DataFrame,
                  compliance: pl.DataFrame, freshness: Freshness, team_months: pl.DataFrame) -> str:
    """All teams, pools with their idle part, and tag compliance; links to every team's page."""
    links = "".join(f"<li><a href='{file_stem(t)}.html'>{html_text(t)}</a></li>" for t in teams)
    spec = alt.Chart(alt.InlineData(values=rows_for_browser(months, "team", with_team=True).to_dicts(), name="rows"),
                     transform=exact_cents(["month", "team", "allocation", "currency"])).mark_bar().encode(
        x=alt.X("team:N", title=None), y=alt.Y("usd:Q", title="Cost"),
        color=alt.Color("allocation:N", title="Allocation"), column=alt.Column("month:N", title=None),
        tooltip=["team:N", "month:N", "allocation:N", alt.Tooltip("usd:Q", format=",.2f", title="cost")],
    ).properties(width=260, height=260, title="Cost per team and month (direct, shared, unattributed)").to_dict()
    header = (f"<header><h1>Platform: cloud costs of every team</h1><p class='fresh'>{freshness.html()}</p>"
              f"<h2>Team dashboards</h2><ul>{links}</ul></header>")
    latest = team_months.filter(pl.col("month") == team_months["month"].max()) if team_months.height else team_months
    sections = (
        "<section><h2>Teams this month and last</h2>"
        + table(latest.to_dicts(), [("team", "Team"), ("month", "Month"), ("days", "Days"), ("total_cents", "Cost"),
                                    ("previous_cents", "Previous month"), ("change_cents", "Change"), ("currency", "Currency")],
                {"days", "total_cents", "previous_cents", "change_cents"})
        + "</section><section><h2>Tag compliance</h2>"
        + table(compliance.to_dicts(), [("month", "Month"), ("currency", "Currency"), ("total_cents", "Effective cost"),
                                        ("untagged_cents", "Untagged"), ("untagged_share", "Untagged share")],
                {"total_cents", "untagged_cents", "untagged_share"})
        + "</section><section><h2>Shared pools</h2><p>Each pool's split by its driver; <em>idle</em> is capacity nobody used, "
          "paid by the pool's owner when its idle policy says so.</p>"
        + table(pools.to_dicts(), [("month", "Month"), ("pool", "Pool"), ("driver", "Split by"), ("team", "Team"), ("amount_cents", "Amount"),
                                   ("share", "Share"), ("idle", "of which idle"), ("currency", "Currency")], {"amount_cents", "share", "idle"})
        + "</section><section><h2>Untagged spend by account</h2>"
        + table(untagged.head(50).to_dicts(), [("month", "Month"), ("account_id", "Account"), ("team", "Account's team"), ("reason", "Reason"),
                                                ("lines", "Lines"), ("amount_cents", "Amount"), ("currency", "Currency")], {"lines", "amount_cents"})
        + "</section>"
    )
    return page("Platform: cloud costs", header, spec, sections)


def team_file_name(team: str) -> str:
    if team == UNATTRIBUTED_TEAM:
        raise ValueError("the unattributed bucket has no dashboard of its own; it is on the platform page")
    return f"{file_stem(team)}.html"


_CSS = (
    "body{font:14px system-ui,sans-serif;margin:1.5em 2em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".fresh{color:#555}.vega-bindings{margin:.5em 0}.vega-bind{display:inline-block;margin-right:1.2em}section{margin-top:1.5em}"
)
