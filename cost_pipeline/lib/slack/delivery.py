"""Sending each message exactly once: a ledger in the lake, the Web API or a dry-run outbox.

The ledger (``<lake>/slack_ledger``) holds one row per message key (kind, team, day, anomaly id) with
its state: ``posted`` (the message is out, its chart not yet), ``sent``, or ``pending`` (failed; tried
again on the next run). A key already ``sent`` is never sent again, so reruns, retries and backfills
post nothing twice. slack-sdk's retry handlers honour ``Retry-After`` on HTTP 429 and back off on 5xx
and connection errors; a message that still fails stays pending and fails the step after the others
went out.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import polars as pl
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, ServerErrorRetryHandler

from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.slack.messages import Message

LEDGER = "slack_ledger"
LEDGER_SCHEMA = {"key": pl.String, "kind": pl.String, "team": pl.String, "day": pl.Date, "anomaly_id": pl.String, "channel": pl.String,
                 "channel_id": pl.String, "state": pl.String, "ts": pl.String, "attempts": pl.Int64, "updated_at": pl.String, "error": pl.String}


class DeliveryError(RuntimeError):
    """Messages that could not be sent after retries; they stay pending in the ledger."""


def web_client(token: str, base_url: str | None = None, retries: int = 3) -> WebClient:
    client = WebClient(token=token, base_url=base_url or WebClient.BASE_URL, timeout=10)
    client.retry_handlers.extend([
        RateLimitErrorRetryHandler(max_retry_count=retries),
        ServerErrorRetryHandler(max_retry_count=retries),
        ConnectionErrorRetryHandler(max_retry_count=retries),
    ])
    return client


class ApiSender:
    def __init__(self, client: WebClient):
        self.client = client

    def post(self, message: Message) -> tuple[str, str]:
        """(channel id, ts): the upload into the thread needs the id Slack resolved the name to."""
        response = self.client.chat_postMessage(**message.payload())
        return response["channel"], response["ts"]

    def attach(self, message: Message, channel_id: str, ts: str) -> None:
        self.client.files_upload_v2(channel=channel_id, thread_ts=ts, file=message.chart, request_file_info=False,
                                    filename=f"{message.team}-{message.day}.png", title="Daily cost, last 30 days")


class OutboxSender:
    """Dry run: one JSON file per message (``channel`` and the Block Kit payload), the chart beside it."""

    def __init__(self, lake: Lake, folder: str):
        self.lake, self.folder = lake, folder

    def _name(self, message: Message) -> str:
        return "-".join(p for p in (message.day.isoformat(), message.kind, message.team, message.anomaly_id) if p)

    def post(self, message: Message) -> tuple[str, str]:
        self.lake.write_file(self.folder, None, self._name(message) + ".json", json.dumps(message.payload(), indent=1).encode())
        return message.channel, "dry-run"

    def attach(self, message: Message, channel_id: str, ts: str) -> None:
        self.lake.write_file(self.folder, None, self._name(message) + ".png", message.chart)


@dataclass(frozen=True)
class Outcome:
    sent: list[str]
    skipped: list[str]  # already sent before
    failed: list[tuple[str, str]]


def read_ledger(lake: Lake) -> pl.DataFrame:
    table = lake.read_table(LEDGER)
    return table if table is not None else pl.DataFrame(schema=LEDGER_SCHEMA)


def deliver(lake: Lake, messages: list[Message], sender, now=None) -> Outcome:
    ledger = {r["key"]: r for r in read_ledger(lake).iter_rows(named=True)}
    sent, skipped, failed = [], [], []
    for message in messages:
        row = ledger.get(message.key, {"key": message.key, "kind": message.kind, "team": message.team, "day": message.day,
                                       "anomaly_id": message.anomaly_id, "channel": message.channel, "channel_id": None, "state": "new", "ts": None,
                                       "attempts": 0})
        if row["state"] == "sent":
            skipped.append(message.key)
            continue
        row = {**row, "attempts": row["attempts"] + 1, "updated_at": (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds")}
        try:
            if row["state"] != "posted":  # a posted message whose chart failed is not posted again
                channel_id, ts = sender.post(message)
                row = {**row, "channel_id": channel_id, "ts": ts, "state": "posted", "error": None}
                ledger[message.key] = row
            if message.chart is not None:
                sender.attach(message, row["channel_id"], row["ts"])
            row = {**row, "state": "sent", "error": None}
            sent.append(message.key)
        except Exception as exc:  # slack-sdk has retried already; record and go on with the others
            row = {**row, "state": "posted" if row["state"] == "posted" else "pending", "error": f"{type(exc).__name__}: {exc}"[:500]}
            failed.append((message.key, row["error"]))
        ledger[message.key] = row
        lake.write_table(LEDGER, pl.DataFrame(list(ledger.values()), schema=LEDGER_SCHEMA))  # after each message: a crash loses nothing
    return Outcome(sent, skipped, failed)
