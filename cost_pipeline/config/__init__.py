"""The one YAML configuration file, validated with pydantic.

Unknown keys are errors (``extra="forbid"``), so a typo such as ``lake_url`` fails at load with the
key's path instead of silently falling back to a default. Secrets never live here: they are read from
environment variables named by the config (e.g. ``slack.token_env``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from cost_pipeline.config.allocation import (
    AllocationConfig,
    EvenDriver,
    FixedDriver,
    KubernetesDriver,
    MetricDriver,
    Pool,
    PoolSelect,
)
from cost_pipeline.config.base import _Model
from cost_pipeline.config.sources import (
    AlertsConfig,
    BillingFormat,
    BillingSource,
    OperationsConfig,
    ReportsConfig,
    SlackConfig,
    UsageConfig,
)
from cost_pipeline.config.tagging import (
    EnforcementConfig,
    TaggingConfig,
    TagKey,
    Team,
    VirtualTagRule,
)
from cost_pipeline.lib.keys import fold_key

__all__ = [
    "AlertsConfig", "AllocationConfig", "BillingFormat", "BillingSource", "CONFIG_ENV", "ConfigError", "EnforcementConfig", "EvenDriver",
    "FixedDriver", "KubernetesDriver", "MetricDriver", "Pool", "PoolSelect", "ReportsConfig", "Settings", "SlackConfig", "TagKey",
    "TaggingConfig", "Team", "UsageConfig", "VirtualTagRule", "bundled_config_path", "load_settings",
]

CONFIG_ENV = "COST_PIPELINE_CONFIG"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class Settings(_Model):
    lake_uri: str  # a local folder, s3://bucket/prefix or gs://bucket/prefix
    lake_endpoint_url: str | None = None  # S3-compatible endpoint for the lake (MinIO, a test server)
    lake_region: str | None = None
    lake_gcp_project: str | None = None  # a gs:// lake's project (default: the environment's)
    partitions_start_date: dt.date = dt.date(2026, 1, 1)
    billing_sources: list[BillingSource] = Field(min_length=1)
    usage: UsageConfig = UsageConfig()
    slack: SlackConfig = SlackConfig()
    reports: ReportsConfig = ReportsConfig()
    alerts: AlertsConfig = AlertsConfig()
    operations: OperationsConfig = OperationsConfig()
    tagging: TaggingConfig = TaggingConfig()
    allocation: AllocationConfig = AllocationConfig()
    source_path: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_sources(self) -> "Settings":
        names = [s.name for s in self.billing_sources]
        if len(set(names)) != len(names):
            raise ValueError(f"billing_sources: duplicate name in {names}")
        return self

    @model_validator(mode="after")
    def _pool_tags_known(self) -> "Settings":
        """A pool tag key in the schema's own namespace (``ml-...``) must be a schema key: ``ml-tema`` is
        a typo that would silently select nothing. Other keys are provider tags as delivered."""
        folded = [fold_key(k.key) for k in self.tagging.keys]
        namespace = os.path.commonprefix(folded).rpartition("-")[0]
        for pool in self.allocation.pools:
            for key, value in (pool.select.tags or {}).items():
                if not key.strip() or not str(value).strip():
                    raise ValueError(f"allocation.pools[{pool.name}].select.tags: empty key or value in {key!r}: {value!r}")
                if namespace and fold_key(key).startswith(namespace + "-") and self.tagging.key_for(key) is None:
                    raise ValueError(
                        f"allocation.pools[{pool.name}].select.tags names {key!r}, which is not a key of the tagging schema "
                        f"({', '.join(k.key for k in self.tagging.keys)})"
                    )
        return self

    @model_validator(mode="after")
    def _alert_teams_known(self) -> "Settings":
        unknown = sorted(set(self.alerts.teams) - set(self.tagging.teams)) if self.tagging.teams else []
        if unknown:
            raise ValueError(f"alerts.teams names team(s) not in tagging.teams: {unknown}")
        return self

    @property
    def rules_version(self) -> str:
        """Content hash of the rules that decide who pays: changing them makes old days stale."""
        rules = {"tagging": self.tagging.model_dump(), "allocation": self.allocation.model_dump()}
        blob = json.dumps(rules, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def bundled_config_path() -> Path:
    return Path(str(resources.files("cost_pipeline") / "demo.yaml"))


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Load the file given, else ``$COST_PIPELINE_CONFIG``, else the bundled demo config."""
    path = Path(path or os.environ.get(CONFIG_ENV) or bundled_config_path())
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: config must be a mapping of keys, got {type(raw).__name__}")
    try:
        return Settings.model_validate({**raw, "source_path": str(path)})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid config: {problems}") from None
