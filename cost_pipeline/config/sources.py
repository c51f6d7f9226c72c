"""Where bills, usage and Slack messages come from and go to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cost_pipeline.config.base import _Model

BillingFormat = Literal["aws_cur2", "aws_cur_legacy", "focus", "gcp_billing_export", "azure_cost_export"]


class BillingSource(_Model):
    """One export: a local folder, ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``bq://project.dataset.table``."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    format: BillingFormat
    uri: str
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, a VPC endpoint, a test server)
    region: str | None = None
    gcp_project: str | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")  # for FOCUS files without BillingCurrency
    dataset: Literal["amortized", "actual"] = "amortized"  # azure_cost_export: which cost details dataset the export holds

    @model_validator(mode="after")
    def _scheme_fits(self) -> "BillingSource":
        if self.uri.startswith("bq://") and self.format != "gcp_billing_export":
            raise ValueError(f"billing source {self.name!r}: bq:// is only for format gcp_billing_export")
        return self


class UsageConfig(_Model):
    """Prometheus usage: extract files, or a live server whose answers are archived in the lake."""

    extracts_uri: str | None = None  # a local folder, s3://bucket/prefix or gs://bucket/prefix
    endpoint_url: str | None = None  # S3-compatible endpoint for extracts on S3
    prometheus_url: str | None = None
    step_seconds: int = Field(default=3600, ge=1)
    queries: dict[str, str] = {}  # extract name -> PromQL, for a live Prometheus
    timeout_seconds: float = 60.0
    # extracts (documents or series-per-line files) larger than this are parsed while streaming: bounded
    # memory (~0.4 GiB) and, above ~16 MB, no slower; smaller ones in memory (lib/extracts.py)
    stream_documents_above_mb: float = Field(default=16, ge=0)


class SlackConfig(_Model):
    """Dry run (the default) writes each message as JSON under ``outbox_uri`` (default ``<lake>/_outbox``); ``dry_run: false`` posts
    through the Web API with the bot token from ``$token_env`` (``base_url``: a proxy or a test server)."""

    outbox_uri: str | None = None
    token_env: str = "SLACK_BOT_TOKEN"
    dry_run: bool = True
    base_url: str | None = None
    platform_channel: str = "#ml-platform-costs"
    notify_days: int = Field(default=2, ge=0)  # partitions older than this many days send nothing unless --notify


class ReportsConfig(_Model):
    """How statements are labelled: ``showback`` (information only, the default) until the numbers are
    trusted, then ``chargeback``; ``dashboard_url``: where the report folder is served, for links."""

    mode: Literal["showback", "chargeback"] = "showback"
    dashboard_url: str | None = None


class TeamAlerts(_Model):
    min_delta: float | None = Field(default=None, gt=0)
    min_ratio: float | None = Field(default=None, gt=0)
    monthly_budget: float | None = Field(default=None, gt=0)  # in the team's billing currency


class AlertsConfig(_Model):
    """Anomaly thresholds (a day is flagged only when it passes all three), budgets, and routing.
    Kept apart from tagging and allocation so that changing a budget does not change ``rules_version``."""

    min_delta: float = Field(default=250.0, gt=0)  # currency units above the baseline, per day
    min_ratio: float = Field(default=0.5, gt=0)  # relative increase over the baseline
    z: float = Field(default=5.0, gt=0)  # robust z-score (median absolute deviation)
    teams: dict[str, TeamAlerts] = {}
    platform_min_severity: Literal["medium", "high", "critical"] = "high"  # also alert the platform channel


class OperationsConfig(_Model):
    """Who runs the pipeline: shown as owners of every asset in the Dagster UI (emails or ``team:<name>``)."""

    owners: list[str] = []
    backfill_days_per_run: int | None = Field(default=None, ge=1)  # None: a backfill is one run
