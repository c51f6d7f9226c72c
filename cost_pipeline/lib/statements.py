"""Monthly statements per team that add up to the bill and stay closed once issued.

A month's statements are its ``team_cost_detail`` rows grouped into lines (direct per project ×
workload type × environment, each shared pool on its own lines, unattributed spend by reason).
Cents are rounded by largest remainder at every level: the month's total per currency, then each
team's total to it, then each line to its team's, so the lines of a statement add up to its total and
the statements (with ``__unattributed__``) add up to the month's bill.

Closing a month stores its exact lines as a snapshot; a closed statement is never recomputed. When the
closed month later changes (AWS restates the bill, or a rules backfill moves cost between teams) the
difference to what was issued lands as adjustment lines on the next open month, naming the closed
month and why it changed.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass

import polars as pl

from cost_pipeline.lib.cents import with_cents
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.money import MONEY, zero

LINE_KEYS = ["allocation", "pool", "project", "workload_type", "environment", "reason"]
STATEMENT_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "team": pl.String(),
    "currency": pl.String(),
    "line_type": pl.String(),  # direct | shared | unattributed | adjustment
    **{k: pl.String() for k in LINE_KEYS},
    "ref_month": pl.String(),  # adjustments: the closed month they correct
    "why": pl.String(),  # adjustments: restatement and/or the rules versions
    "amount": MONEY,
}
LINE_ORDER = {"direct": 0, "shared": 1, "unattributed": 2, "adjustment": 3}
CLOSED_TABLE = "closed_statements"
INDEX = "index.json"


class StatementError(ValueError):
    """A month that cannot be closed as asked (already closed, no data, missing days)."""


@dataclass(frozen=True)
class ClosedMonth:
    month: str
    closed_at: str
    rules_versions: list[str]
    lines: pl.DataFrame  # STATEMENT_SCHEMA + cents columns, as issued


def months_in(detail: pl.DataFrame) -> list[str]:
    return sorted(detail["date"].dt.month_start().unique().dt.strftime("%Y-%m").to_list()) if detail.height else []


def in_month(month: str) -> pl.Expr:
    """Rows of ``month`` (YYYY-MM) by a range on ``date``: formatting a year's 8.6 M dates as text, once per
    month, was most of the statements' time."""
    start = dt.date.fromisoformat(f"{month}-01")
    return (pl.col("date") >= start) & (pl.col("date") < dt.date.fromisoformat(f"{_add_month(month)}-01"))


def month_lines(detail: pl.DataFrame, month: str) -> pl.DataFrame:
    """The month's exact lines per team and currency (no adjustments, no cents)."""
    rows = detail.filter(in_month(month))
    return (
        rows.group_by("team", "currency", *LINE_KEYS)
        .agg(pl.col("amount").sum())
        .with_columns(month=pl.lit(month), line_type=pl.col("allocation"), ref_month=pl.lit(None, pl.String), why=pl.lit(None, pl.String))
        .select([pl.col(c).cast(t) for c, t in STATEMENT_SCHEMA.items()])
    )


def next_open_month(month: str, closed: set[str]) -> str:
    candidate = _add_month(month)
    while candidate in closed:
        candidate = _add_month(candidate)
    return candidate


def _add_month(month: str) -> str:
    year, mon = map(int, month.split("-"))
    return f"{year + mon // 12}-{mon % 12 + 1:02d}"


def adjustments(month: str, detail: pl.DataFrame, closed: dict[str, ClosedMonth]) -> pl.DataFrame:
    """Lines correcting each closed month whose next open month is ``month``: what that month is now,
    minus what was issued for it (its statement and the adjustments already on closed statements)."""
    out = [pl.DataFrame(schema=STATEMENT_SCHEMA)]
    keys = ["team", "currency", *LINE_KEYS]
    for ref in sorted(m for m in closed if next_open_month(m, set(closed)) == month):
        now = month_lines(detail, ref)
        issued = pl.concat(
            [closed[ref].lines.filter(pl.col("line_type") != "adjustment")]
            + [c.lines.filter(pl.col("ref_month") == ref) for c in closed.values()]
        ).group_by(keys).agg(pl.col("amount").sum().alias("issued"))
        diff = (
            now.select(*keys, "amount").join(issued, on=keys, how="full", coalesce=True, nulls_equal=True)
            .with_columns(pl.col("amount", "issued").fill_null(zero()))
            .with_columns(amount=pl.col("amount") - pl.col("issued"))
            .filter(pl.col("amount") != 0)
        )
        if diff.is_empty():
            continue
        out.append(
            diff.with_columns(
                month=pl.lit(month), line_type=pl.lit("adjustment"), ref_month=pl.lit(ref), why=pl.lit(_why(ref, detail, now, issued, closed[ref]))
            ).select([pl.col(c).cast(t) for c, t in STATEMENT_SCHEMA.items()])
        )
    return pl.concat(out)


def _why(ref: str, detail: pl.DataFrame, now: pl.DataFrame, issued: pl.DataFrame, closed: ClosedMonth) -> str:
    reasons = []
    totals_now = dict(now.group_by("currency").agg(pl.col("amount").sum()).iter_rows())
    totals_issued = dict(issued.group_by("currency").agg(pl.col("issued").sum()).iter_rows())
    if totals_now != totals_issued:
        reasons.append(f"restatement of the {ref} bill")
    rules_now = sorted(detail.filter(in_month(ref))["rules_version"].unique().to_list())
    if rules_now != closed.rules_versions:
        reasons.append(f"rules version {'+'.join(closed.rules_versions)} -> {'+'.join(rules_now)}")
    return "; ".join(reasons) or f"recomputed {ref}"


def statement(month: str, detail: pl.DataFrame, closed: dict[str, ClosedMonth]) -> pl.DataFrame:
    """Every team's lines for ``month`` (adjustments included), with ``team_cents`` (adds up per
    currency to the month's total) and ``amount_cents`` (adds up per team to ``team_cents``)."""
    lines = pl.concat([month_lines(detail, month), adjustments(month, detail, closed)])
    if lines.is_empty():
        return lines.with_columns(team_cents=pl.lit(None, pl.Decimal(38, 2)), amount_cents=pl.lit(None, pl.Decimal(38, 2)))
    teams = with_cents(
        lines.group_by("team", "currency").agg(pl.col("amount").sum().alias("team_total")).sort("currency", "team"),
        "team_total", ["currency"],
    ).drop("team_total")
    lines = (
        lines.join(teams, on=["team", "currency"])
        .with_columns(_order=pl.col("line_type").replace_strict(LINE_ORDER, return_dtype=pl.Int8))
        .sort(["currency", "team", "_order", "ref_month", "pool", "project", "workload_type", "environment", "reason"], nulls_last=True)
        .drop("_order")
    )
    return with_cents(lines, "amount", ["team", "currency"], parent="team_total_cents").rename({"team_total_cents": "team_cents"})


def closed_months(lake: Lake) -> dict[str, ClosedMonth]:
    index = _index(lake)
    out = {}
    for month, meta in sorted(index.items()):
        data = lake.read_file(CLOSED_TABLE, None, f"{month}.parquet")
        if data is None:
            raise StatementError(f"{lake.location(CLOSED_TABLE, month + '.parquet')}: closed month {month} has lost its snapshot")
        out[month] = ClosedMonth(month, meta["closed_at"], meta["rules_versions"], pl.read_parquet(io.BytesIO(data)))
    return out


def _index(lake: Lake) -> dict:
    raw = lake.read_file(CLOSED_TABLE, None, INDEX)
    return json.loads(raw) if raw else {}


def close(lake: Lake, month: str, detail: pl.DataFrame, expected_days: list[dt.date], now: dt.datetime) -> ClosedMonth:
    """Freeze ``month``: its statement (with the adjustments it carries) becomes the issued one.

    Refuses a month already closed, one without data, and one missing days of ``expected_days``
    (pass only the days that should be there, e.g. up to yesterday, to close a partial month).
    """
    closed = closed_months(lake)
    if month in closed:
        raise StatementError(f"{month} was closed at {closed[month].closed_at}; a closed statement is never rewritten")
    have = set(detail.filter(in_month(month))["date"].unique().to_list())
    if not have:
        raise StatementError(f"{month} has no allocated costs in the lake; materialize its days before closing it")
    missing = sorted(d for d in expected_days if d.strftime("%Y-%m") == month and d not in have)
    if missing:
        shown = ", ".join(d.isoformat() for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise StatementError(f"{month} lacks {len(missing)} day(s) of allocated costs ({shown}); materialize them or close with --allow-missing-days")
    lines = statement(month, detail, closed)
    rules = sorted(detail.filter(in_month(month))["rules_version"].unique().to_list())
    record = ClosedMonth(month, now.astimezone(dt.timezone.utc).isoformat(timespec="seconds"), rules, lines)
    buffer = io.BytesIO()
    lines.write_parquet(buffer)
    lake.write_file(CLOSED_TABLE, None, f"{month}.parquet", buffer.getvalue())
    index = _index(lake)  # the index entry is the commit point: written last
    index[month] = {"closed_at": record.closed_at, "rules_versions": rules}
    lake.write_file(CLOSED_TABLE, None, INDEX, json.dumps(index, indent=1, sort_keys=True).encode())
    return record
