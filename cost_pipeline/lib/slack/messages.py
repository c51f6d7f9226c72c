"""Block Kit messages: a team's daily digest, anomaly and budget alerts, the platform digest.

Values from tags and usage labels are untrusted: they go through :func:`esc` (Slack's own escaping of
``&``, ``<`` and ``>``, so ``<!channel>`` pings nobody, plus ``safe_output.display_text``). Messages
stay within Slack's limits: at most 50 blocks, 3,000 characters per section text. A team's digest is
built from that team's rows only.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal

from cost_pipeline.lib.money import largest_remainder, round_cents
from cost_pipeline.lib.safe_output import display_text

MAX_BLOCKS = 50
MAX_SECTION = 3000


@dataclass(frozen=True)
class Message:
    kind: str  # team_digest | anomaly_alert | platform_alert | budget_alert | platform_digest
    team: str
    day: dt.date
    channel: str
    text: str  # the notification fallback
    blocks: list[dict]
    anomaly_id: str = ""
    chart: bytes | None = field(default=None, compare=False)  # a PNG for the thread

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.team}|{self.day.isoformat()}|{self.anomaly_id}"

    def payload(self) -> dict:
        return {"channel": self.channel, "text": self.text, "blocks": self.blocks}


def esc(value: object, limit: int = 120) -> str:
    return display_text(value, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def money(amount: Decimal, currency: str) -> str:
    return f"{Decimal(amount):,.2f} {esc(currency, 8)}"


def section(text: str) -> dict:
    if len(text) > MAX_SECTION:
        text = text[: MAX_SECTION - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": display_text(text, 150), "emoji": False}}


def context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:MAX_SECTION]}]}


def bounded(blocks: list[dict]) -> list[dict]:
    return blocks if len(blocks) <= MAX_BLOCKS else [*blocks[: MAX_BLOCKS - 1], context("(more in the dashboard)")]


def ranked_lines(items: list[tuple[str, Decimal]], total: Decimal, currency: str, top: int = 5) -> str:
    """The top items and an *other* line, rounded together by largest remainder so they add up to the total."""
    items = sorted(items, key=lambda kv: -kv[1])
    shown, rest = items[:top], items[top:]
    other = total - sum((v for _, v in shown), Decimal(0))
    labels = [esc(k) for k, _ in shown] + (["other"] if rest or other else [])
    cents = largest_remainder([v for _, v in shown] + ([other] if rest or other else []))
    return "\n".join(f"• {label}: {money(c, currency)}" for label, c in zip(labels, cents))


def describe_anomaly(a: dict) -> str:
    kind = {"spike": "Spike", "level_shift": "Sustained increase", "new_spend": "New spend"}[a["kind"]]
    where = f"{a['scope']} *{esc(a['scope_value'])}*" if a["scope"] != "team" else "the team's total"
    pct = f" ({a['impact_pct']:+.0%})" if a["impact_pct"] is not None else ""
    since = f" since {a['episode_start']}" if a["episode_start"] != a["date"] else ""
    observed, expected = round_cents(a["observed"]), round_cents(a["expected"])  # the printed difference is theirs
    lines = [f"*{kind}* in {where} on {a['date']}{since}: {money(observed, a['currency'])} vs "
             f"{money(expected, a['currency'])} expected, {money(observed - expected, a['currency'])}{pct} · severity {a['severity']}"]
    drivers = json.loads(a["drivers"] or "[]")[:3]
    if drivers:
        lines.append("Top contributors: " + "; ".join(f"{esc(d['dimension'])} {esc(d['value'])} +{d['delta']:,.2f} ({d['share']:.0%})" for d in drivers))
    return "\n".join(lines)


def anomaly_alert(a: dict, team_label: str, channel: str, kind: str = "anomaly_alert") -> Message:
    impact = round_cents(a["observed"]) - round_cents(a["expected"])
    text = f"Cost anomaly for {display_text(team_label, 60)}: {a['kind'].replace('_', ' ')} of {impact:,.2f} {a['currency']}"
    blocks = [header(f"Cost anomaly: {team_label}"), section(describe_anomaly(a)),
              context(f"anomaly id `{a['anomaly_id']}` · score {a['score']:.1f} (robust z) · expected = median of the same weekday over 4 weeks")]
    return Message(kind, a["team"], a["episode_start"], channel, text, blocks, anomaly_id=a["anomaly_id"])


@dataclass(frozen=True)
class Digest:
    team: str
    day: dt.date
    currency: str
    day_total: Decimal
    day_projects: list[tuple[str, Decimal]]
    month_to_date: Decimal
    last_month_same_days: Decimal
    forecast: Decimal
    budget: Decimal | None
    top_experiments: list[tuple[str, Decimal]]
    month_total: Decimal  # month to date, for the experiments' "other" line
    anomalies: list[dict]
    untagged: Decimal
    dashboard: str | None


def team_digest(d: Digest, channel: str) -> Message:
    change = d.month_to_date - d.last_month_same_days
    budget = (f" · budget {money(d.budget, d.currency)} ({'*over*' if d.forecast > d.budget else 'within'})" if d.budget is not None else "")
    blocks = [
        header(f"{d.team}: cloud costs for {d.day:%a %d %b %Y}"),
        section(f"*Yesterday* {money(d.day_total, d.currency)}\n*Month to date* {money(d.month_to_date, d.currency)} "
                f"({'+' if change >= 0 else ''}{change:,.2f} vs the same days last month)\n"
                f"*Month-end forecast* {money(d.forecast, d.currency)}{budget}"),
        section("*By project, yesterday*\n" + (ranked_lines(d.day_projects, d.day_total, d.currency) or "no cost")),
    ]
    if d.top_experiments:
        blocks.append(section("*Top experiments, month to date*\n" + ranked_lines(d.top_experiments, d.month_total, d.currency)))
    if d.anomalies:
        blocks.append(section("*Anomalies*\n" + "\n".join(describe_anomaly(a) for a in d.anomalies)))
    if d.untagged:
        blocks.append(section(f"*Untagged spend in your accounts yesterday* {money(d.untagged, d.currency)}: unattributed until tagged"))
    if d.dashboard:
        blocks.append(context(f"<{d.dashboard}|Open the dashboard>"))
    text = f"{d.team}: {d.day_total:,.2f} {d.currency} yesterday, {d.month_to_date:,.2f} month to date"
    return Message("team_digest", d.team, d.day, channel, text, bounded(blocks))


def budget_alert(team: str, day: dt.date, currency: str, forecast: Decimal, budget: Decimal, mtd: Decimal, channel: str) -> Message:
    text = f"{team} is forecast to exceed its monthly budget: {forecast:,.2f} vs {budget:,.2f} {currency}"
    blocks = [header(f"Budget: {team}"),
              section(f"Month-end forecast {money(forecast, currency)} is above the budget of {money(budget, currency)} "
                      f"(month to date {money(mtd, currency)}, as of {day}).")]
    return Message("budget_alert", team, day.replace(day=1), channel, text, blocks)


def platform_digest(day: dt.date, currency: str, total: Decimal, teams: list[tuple[str, Decimal]], untagged: Decimal,
                    pools: list[tuple[str, Decimal]], idle: Decimal, channel: str, dashboard: str | None) -> Message:
    share = float(untagged / total) if total else 0.0
    blocks = [
        header(f"Platform: cloud costs for {day:%a %d %b %Y}"),
        section(f"*Total* {money(total, currency)} · *untagged* {money(untagged, currency)} ({share:.1%})"),
        section("*By team*\n" + ranked_lines(teams, total, currency, top=12)),
    ]
    if pools:
        pooled = sum((v for _, v in pools), Decimal(0))
        blocks.append(section(f"*Shared pools* ({money(idle, currency)} idle)\n" + ranked_lines(pools, pooled, currency, top=12)))
    if dashboard:
        blocks.append(context(f"<{dashboard}|Open the platform dashboard>"))
    return Message("platform_digest", "platform", day, channel, f"Cloud costs {day}: {total:,.2f} {currency}", bounded(blocks))
