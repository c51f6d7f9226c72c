"""Anomalies per day, and the Slack messages they and the daily figures produce."""

import datetime as dt
import os

import dagster as dg
import polars as pl

from cost_pipeline.defs.metadata import day_metadata
from cost_pipeline.defs.partitions import BACKFILL_POLICY, DAILY, partition_days
from cost_pipeline.defs.resources import LakeResource, PipelineConfig
from cost_pipeline.lib.anomalies import Thresholds, daily_sums, detect
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.markdown import md_table
from cost_pipeline.lib.slack.delivery import ApiSender, OutboxSender, deliver, web_client
from cost_pipeline.lib.slack.plan import alerts, digests

NOTIFY_TAG = "cost_pipeline/notify"
HISTORY_DAYS = 35  # four weeks of baseline and the episode before the day
# days of a ranged run whose history is read at once: a year-long backfill holds 63 days of
# team_cost_detail, not 400 (8.7 M rows, 0.8 GiB at 1 M lines a day), and each day is detected on
# exactly the history a run of that day alone would read
WINDOW_DAYS = 28


def _history(lake: Lake, first: dt.date, last: dt.date) -> pl.DataFrame:
    held = lake.days("team_cost_detail")
    days = sorted(d for d in held if first - dt.timedelta(days=HISTORY_DAYS) <= d <= last)
    missing = [d.isoformat() for d in (first + dt.timedelta(days=i) for i in range((last - first).days + 1)) if d not in held]
    if missing:
        raise dg.Failure(description=f"team_cost_detail lacks day(s) {', '.join(missing[:5])}; materialize them first", allow_retries=False)
    return lake.scan_days("team_cost_detail", days).collect()


def _windows(lake: Lake, days: list[dt.date]):
    """Each day with its own history (the day and the HISTORY_DAYS before it) and the window's daily
    sums, read and summed WINDOW_DAYS days at a time."""
    for start in range(0, len(days), WINDOW_DAYS):
        chunk = days[start:start + WINDOW_DAYS]
        detail = _history(lake, chunk[0], chunk[-1])
        sums = daily_sums(detail)
        for day in chunk:
            yield day, detail.filter(pl.col("date").is_between(day - dt.timedelta(days=HISTORY_DAYS), day)), sums


@dg.asset(partitions_def=DAILY, backfill_policy=BACKFILL_POLICY, group_name="alerts", kinds={"polars", "parquet"}, deps=["team_cost_detail"])
def anomalies(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource) -> dg.MaterializeResult:
    """Spikes, sustained increases and new spend per team and team × project, with their top contributors."""
    lake, settings = cost_lake.lake(), pipeline.settings()
    days = partition_days(context)
    config = settings.alerts
    default = Thresholds(min_delta=config.min_delta, min_ratio=config.min_ratio, z=config.z)
    per_team = {t: Thresholds(min_delta=c.min_delta or default.min_delta, min_ratio=c.min_ratio or default.min_ratio, z=default.z)
                for t, c in config.teams.items()}
    # a sensor's restatement run of a past day: what changed is the provider's restatement, not new spend
    restated = "cost_pipeline/fingerprint" in context.run.tags
    settled = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=settings.slack.notify_days)
    with lake.staging("anomalies") as staging:
        for day, detail, sums in _windows(lake, days):
            found = detect(detail, day, per_team, default, sums)
            if restated and day < settled:
                found = found.with_columns(suppressed=pl.col("suppressed").fill_null(f"restatement of {day} delivered later"))
            path = staging.write_day(day, found)
            shown = found.select("team", "scope", "scope_value", "kind", "severity", pl.col("impact").round(2), "suppressed")
            context.add_asset_metadata({**day_metadata(found, path, ["impact"]), "anomalies": len(found),
                                        "table": dg.MetadataValue.md(md_table(shown.columns, [list(r) for r in shown.iter_rows()]))},
                                       partition_key=day.isoformat())
    return dg.MaterializeResult()


@dg.asset(partitions_def=DAILY, backfill_policy=BACKFILL_POLICY, group_name="alerts", kinds={"slack"}, deps=["anomalies", "team_cost_detail", "untagged_spend"])
def slack_notifications(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource) -> dg.MaterializeResult:
    """Anomaly and budget alerts for each day, and the digests of the newest day; each message once
    (ledger). Days older than ``slack.notify_days`` send nothing unless the run is tagged notify."""
    lake, settings = cost_lake.lake(), pipeline.settings()
    days = partition_days(context)
    asked = context.run.tags.get(NOTIFY_TAG) == "true"
    recent = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=settings.slack.notify_days)
    days = [d for d in days if asked or d >= recent]
    if not days:
        return dg.MaterializeResult(metadata={"sent": 0, "note": "past days: nothing sent (run with --notify to send)"})
    detail = _history(lake, days[0], days[-1])
    found = lake.scan_days("anomalies", days).collect()
    untagged = lake.scan_days("untagged_spend", days).select("date", "account_id", "amount", "currency").collect()
    messages = [m for d in days for m in alerts(d, found.filter(pl.col("date") == d), detail, settings)]
    messages += digests(days[-1], detail, found.filter(pl.col("date") == days[-1]), untagged, settings)
    if settings.slack.dry_run:
        outbox = Lake.from_uri(settings.slack.outbox_uri or lake.location("_outbox"))
        sender, where = OutboxSender(outbox, "messages"), outbox.location("messages")
    else:
        token = os.environ.get(settings.slack.token_env)
        if not token:
            raise dg.Failure(description=f"slack.dry_run is false but ${settings.slack.token_env} is not set", allow_retries=False)
        sender, where = ApiSender(web_client(token, settings.slack.base_url)), settings.slack.base_url or "Slack"
    outcome = deliver(lake, messages, sender)
    metadata = {"sent": len(outcome.sent), "already_sent": len(outcome.skipped), "failed": len(outcome.failed), "destination": where,
                "messages": dg.MetadataValue.md(md_table(["key"], [[k] for k in outcome.sent[:50]]))}
    if outcome.failed:
        raise dg.Failure(description="; ".join(f"{k}: {e}" for k, e in outcome.failed[:5]) + " (pending: sent on the next run)", metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)
