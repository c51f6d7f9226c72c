"""A team's statement as the CSV finance imports and the HTML page people read.

Everything that came from tags or usage labels goes through ``safe_output``: escaped for HTML,
neutralized for spreadsheets. The CSV's last row is the statement total; the lines above add up to it.
"""

from __future__ import annotations

import csv
import io

import polars as pl

from cost_pipeline.lib.allocate import UNATTRIBUTED_TEAM
from cost_pipeline.lib.safe_output import csv_cell, file_stem, html_text

CSV_COLUMNS = ["month", "team", "currency", "line_type", "description", "project", "workload_type", "environment",
               "pool", "driver", "reason", "ref_month", "why", "amount"]
MODES = {"showback": "Showback statement: for information, not charged", "chargeback": "Chargeback statement"}


def statement_file_stem(team: str) -> str:
    return "unattributed" if team == UNATTRIBUTED_TEAM else file_stem(team)


def describe(row: dict) -> str:
    kind = row["line_type"]
    if kind == "adjustment":
        return f"Adjustment for {row['ref_month']} ({row['why']}): {describe({**row, 'line_type': row['allocation']})}"
    if kind == "shared":
        where = " / ".join(v for v in (row["project"], row["workload_type"], row["environment"]) if v)
        return f"Shared pool {row['pool']}" + (f" for {where}" if where else "")
    if kind == "unattributed":
        return f"Unattributed: {row['reason'] or 'no reason recorded'}"
    return " / ".join(v or "(none)" for v in (row["project"], row["workload_type"], row["environment"]))


def _rows(lines: pl.DataFrame, drivers: dict[str, str]) -> list[dict]:
    return [{**r, "driver": drivers.get(r["pool"] or "", ""), "description": describe(r)} for r in lines.iter_rows(named=True)]


def render_csv(lines: pl.DataFrame, drivers: dict[str, str]) -> str:
    """One team's lines in one currency or several; a ``total`` row per currency closes each."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for (currency,), group in lines.group_by("currency", maintain_order=True):
        rows = _rows(group, drivers)
        for r in rows:
            writer.writerow([csv_cell(r[c]) if c != "amount" else f"{r['amount_cents']:.2f}" for c in CSV_COLUMNS])
        first = rows[0]
        writer.writerow([first["month"], csv_cell(first["team"]), currency, "total", "Statement total", *[""] * 8, f"{first['team_cents']:.2f}"])
    return out.getvalue()


def render_html(lines: pl.DataFrame, drivers: dict[str, str], mode: str, closed_at: str | None, rules: str) -> str:
    first = lines.row(0, named=True)
    team = "Unattributed spend" if first["team"] == UNATTRIBUTED_TEAM else f"Team {html_text(first['team'])}"
    status = f"Closed {html_text(closed_at)}: this statement is final; later changes appear as adjustments on the next open month." if closed_at \
        else "Open: figures change until the month is closed."
    body = []
    for (currency,), group in lines.group_by("currency", maintain_order=True):
        cells = "".join(
            f"<tr class='{html_text(r['line_type'])}'><td>{html_text(r['line_type'])}</td><td>{html_text(r['description'], 200)}</td>"
            f"<td>{html_text(r['driver'], 200)}</td><td class='num'>{r['amount_cents']:,.2f}</td></tr>"
            for r in _rows(group, drivers)
        )
        body.append(
            f"<h2>{html_text(currency)}</h2><table><thead><tr><th>Type</th><th>Line</th><th>Split by</th><th class='num'>Amount</th></tr></thead>"
            f"<tbody>{cells}</tbody><tfoot><tr><th colspan='3'>Statement total</th><th class='num'>{group['team_cents'][0]:,.2f} {html_text(currency)}</th></tr></tfoot></table>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{team}: {html_text(first['month'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>{team}: {html_text(first['month'])}</h1><p class='mode'>{html_text(MODES[mode])}</p>"
        f"<p class='status'>{status}</p><p>Rules version {html_text(rules)}. Amounts in cents add up: lines to the total, "
        f"statements and unattributed spend to the month's effective cost.</p>{''.join(body)}</body></html>\n"
    )


_CSS = (
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;min-width:60%}"
    "td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}.num{text-align:right;font-variant-numeric:tabular-nums}"
    "tr.adjustment td{background:#fff6e0}.mode{font-weight:600}.status{color:#555}"
)
