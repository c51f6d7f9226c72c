"""The report folder under the lake: ``reports/summary.md`` and ``reports/teams/<team>.csv``.

Each team's CSV holds only that team's rows, so it can be shared with the team as is. Team names
reach file names, so only names that pass the schema's safe pattern are used as such; anything else
would have been quarantined already, and is refused here as a second line of defence.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal

import polars as pl

from cost_pipeline.lib.allocate import UNATTRIBUTED_TEAM
from cost_pipeline.lib.billing.totals import held_totals, reconcile_to_bill
from cost_pipeline.lib.cents import with_cents
from cost_pipeline.lib.compliance import top_untagged_resources
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.money import largest_remainder, round_cents
from cost_pipeline.lib.reports import KINDS
from cost_pipeline.lib.tags import SAFE_TEAM


@dataclass(frozen=True)
class Summary:
    first_day: str
    last_day: str
    totals: dict[str, Decimal]  # currency -> effective spend, to the cent
    teams: list[tuple[str, str, Decimal]]  # (team, currency, amount to the cent), largest first
    untagged_share: dict[str, float]  # currency -> quarantined share of effective spend
    untagged_by_reason: list[tuple[str, str, Decimal]]  # reason, currency, amount
    top_untagged: list[tuple[str, str, str, Decimal, str]]  # resource, account, service, amount, currency
    virtual_tagged: list[tuple[str, str, Decimal]]  # virtual-tag rule, currency, spend it helped attribute
    final_days: int  # days whose every line is invoiced; the others are estimates AWS may restate
    days: int
    shared_by_pool: list[tuple[str, str, Decimal]]  # pool, currency, amount shared out by its driver
    bill: list[tuple[str, str, str, str, Decimal, Decimal]]  # source, period, currency, status, bill, lake (held days)


@dataclass(frozen=True)
class WrittenReports:
    folder: str
    summary: str
    summary_text: str
    team_files: list[str]


def summarize(lake: Lake, first_day: dt.date = dt.date.min) -> Summary:
    """``first_day``: the first partition; bill lines dated before it can never land."""
    daily = lake.scan("team_daily_costs").collect()
    # aggregates of the lake's big tables, streamed: a year's untagged_spend collected whole took 8.7 GiB
    untagged = lake.scan("untagged_spend").select("resource_id", "account_id", "service", "reason", "amount", "currency")
    reasons, top = pl.collect_all([
        untagged.group_by("reason", "currency").agg(pl.col("amount").sum()).sort(["currency", "amount"], descending=[False, True]),
        top_untagged_resources(untagged, n=10),
    ], engine="streaming")
    per_team = daily.group_by("team", "currency").agg(pl.col("total").sum()).sort(
        ["currency", "total", "team"], descending=[False, True, False]
    )
    teams: list[tuple[str, str, Decimal]] = []
    totals: dict[str, Decimal] = {}
    for (currency,), group in per_team.group_by("currency", maintain_order=True):
        cents = largest_remainder(group["total"].to_list())
        teams.extend(zip(group["team"].to_list(), [currency] * group.height, cents))
        totals[currency] = round_cents(sum(group["total"].to_list(), Decimal(0)))
    untagged_by_currency = dict(reasons.group_by("currency").agg(pl.col("amount").sum()).iter_rows())
    grand = dict(daily.group_by("currency").agg(pl.col("total").sum()).iter_rows())
    allocated = lake.scan("allocated_costs").filter(pl.col("tag_source") != "tag").collect()
    rules = pl.col("tag_source").str.split(",").list.eval(pl.element().str.split("=").list.last()).list.unique()
    virtual = (
        allocated.with_columns(rule=rules).explode("rule")
        .group_by("rule", "currency").agg(pl.col("amount").sum()).sort(["currency", "amount"], descending=[False, True])
    )
    # the bill reconciliation's sums and each day's finality (days whose file changed are read again)
    held = held_totals(lake)
    finality = held.group_by("date").agg(pl.col("is_final").all())
    shared = (
        lake.scan("allocated_costs").filter(pl.col("allocation") == "shared")
        .group_by("pool", "currency").agg(pl.col("amount").sum()).sort("pool", "currency").collect()
    )
    bill_totals = lake.read_table("bill_totals")
    bill = []
    if bill_totals is not None:
        sources = bill_totals["source"].unique().to_list()
        table = reconcile_to_bill(bill_totals, held, lake.days("cost_lines"), first_day, sources)
        bill = [(r["source"], r["billing_period"], r["currency"], r["status"], round_cents(r["held_bill_effective"]),
                 round_cents(r["lake_effective"])) for r in table.iter_rows(named=True)]
    return Summary(
        first_day=str(daily["date"].min()),
        last_day=str(daily["date"].max()),
        totals=totals,
        teams=teams,
        untagged_share={c: float(untagged_by_currency.get(c, 0) / t) if t else 0.0 for c, t in sorted(grand.items())},
        untagged_by_reason=[(r, c, round_cents(a)) for r, c, a in reasons.iter_rows()],
        top_untagged=[(r["resource_id"], r["account_id"], r["service"], round_cents(r["amount"]), r["currency"]) for r in top.iter_rows(named=True)],
        virtual_tagged=[(src, c, round_cents(a)) for src, c, a in virtual.iter_rows()],
        final_days=int(finality["is_final"].sum()),
        days=finality.height,
        shared_by_pool=[(p, c, round_cents(a)) for p, c, a in shared.iter_rows()],
        bill=bill,
    )


def render_text(summary: Summary) -> str:
    lines = [f"Effective spend {summary.first_day} .. {summary.last_day}"]
    for currency, total in summary.totals.items():
        lines.append(f"  total: {total:,.2f} {currency}")
    lines.append(f"  invoiced (final) days: {summary.final_days} of {summary.days}; the rest are estimates until AWS finalizes the month")
    if summary.bill:
        lines.append("Reconciled to the delivered bill (effective cost of the days in the lake):")
        for source, period, currency, status, bill, lake in summary.bill:
            lines.append(f"  {_plain(source, 16):<16} {period:<18} bill {bill:>14,.2f}  lake {lake:>14,.2f} {currency}  {status}")
    lines.append("Per team:")
    for team, currency, amount in summary.teams:
        lines.append(f"  {_plain(team, 22):<22} {amount:>14,.2f} {currency}")
    if summary.shared_by_pool:
        lines.append("Shared pools, split by measured use:")
        for pool, currency, amount in summary.shared_by_pool:
            lines.append(f"  {_plain(pool, 22):<22} {amount:>14,.2f} {currency}")
    for currency, share in summary.untagged_share.items():
        lines.append(f"Untagged (quarantined) share of {currency} spend: {share:.2%}")
        for reason, reason_currency, amount in summary.untagged_by_reason:
            if reason_currency == currency:
                lines.append(f"  {_plain(reason, 28):<28} {amount:>12,.2f} {currency}")
    if summary.top_untagged:
        lines.append("Top untagged resources:")
        for resource, account, service, amount, currency in summary.top_untagged:
            lines.append(f"  {_plain(resource, 60):<60} {_plain(account, 13):<13} {_plain(service, 20):<20} {amount:>12,.2f} {currency}")
    if summary.virtual_tagged:
        lines.append("Spend attributed with help of virtual-tag rules:")
        for source, currency, amount in summary.virtual_tagged:
            lines.append(f"  {_plain(source, 60):<60} {amount:>12,.2f} {currency}")
    return "\n".join(lines)


def _plain(text: object, width: int) -> str:
    """Untrusted text for a terminal or a code block: printable characters only, no backticks, bounded."""
    value = "".join(ch if ch.isprintable() and ch != "`" else "?" for ch in str(text or ""))
    if len(value) <= width:
        return value
    head = width // 3
    return value[:head] + "…" + value[-(width - head - 1) :]


def _team_file_name(team: str) -> str:
    if team == UNATTRIBUTED_TEAM:
        return "unattributed.csv"
    if not re.fullmatch(SAFE_TEAM, team):
        raise ValueError(f"refusing to use team name {team!r} as a file name")
    return f"{team}.csv"


_SUMMARY_HEAD, _SUMMARY_TAIL = "# Cloud cost summary\n\n```\n", "\n```\n"


def summary_markdown(text: str) -> str:
    return _SUMMARY_HEAD + text + _SUMMARY_TAIL


def summary_text(markdown: str) -> str:
    """The text of a ``summary.md`` (what ``cost-pipeline summary`` prints)."""
    return markdown.removeprefix(_SUMMARY_HEAD).removesuffix(_SUMMARY_TAIL)


def write_reports(lake: Lake, first_day: dt.date = dt.date.min) -> WrittenReports:
    """Everything is rendered and every file name checked before the first file is written, so a bad
    value fails the step with the previous reports intact."""
    summary = summarize(lake, first_day)
    text = summary_markdown(render_text(summary))
    daily = lake.scan("team_daily_costs").collect().sort("date", "team")
    # cents rounded once: teams' totals add up per day and currency, each row's parts to its total
    daily = with_cents(daily.drop("total_cents"), "total", ["date", "currency"], parts=KINDS)
    people = daily.select("date", "team", "currency", *[pl.col(f"{c}_cents").alias(c) for c in [*KINDS, "total"]])
    team_files = {_team_file_name(team): rows.write_csv() for (team,), rows in people.group_by("team", maintain_order=True)}
    summary_path = lake.write_file("reports", None, "summary.md", text.encode("utf-8"))
    files = [lake.write_file("reports/teams", None, name, body.encode("utf-8")) for name, body in team_files.items()]
    return WrittenReports(folder=lake.location("reports"), summary=summary_path, summary_text=text, team_files=files)
