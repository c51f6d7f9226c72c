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
import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_ENV = "COST_PIPELINE_CONFIG"
BillingFormat = Literal["aws_cur2", "aws_cur_legacy", "focus", "gcp_billing_export"]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BillingSource(_Model):
    """One export: a local folder, ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``bq://project.dataset.table``."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    format: BillingFormat
    uri: str
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, a VPC endpoint, a test server)
    region: str | None = None
    gcp_project: str | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")  # for FOCUS files without BillingCurrency

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


class SlackConfig(_Model):
    outbox_uri: str | None = None
    token_env: str = "SLACK_BOT_TOKEN"


class TagKey(_Model):
    """One canonical tag of the schema and the rules its values must follow."""

    key: str
    column: str = Field(pattern=r"^[a-z_]+$")
    required: bool = True
    required_when: dict[str, str] | None = None
    allowed: list[str] | None = None
    pattern: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


def _default_tag_keys() -> list[TagKey]:
    return [
        TagKey(key="ml-team", column="team"),
        TagKey(key="ml-project", column="project", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"),
        TagKey(
            key="ml-workload-type",
            column="workload_type",
            allowed=["training", "inference", "data-processing", "notebook"],
        ),
        TagKey(key="ml-environment", column="environment", allowed=["dev", "staging", "prod"]),
        TagKey(
            key="ml-experiment-id",
            column="experiment_id",
            required=False,
            required_when={"ml-workload-type": "training"},
            pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$",
        ),
    ]


class Team(_Model):
    slack_channel: str | None = None
    owners: list[str] = []


class VirtualTagRule(_Model):
    """Fill tags a line lacks from other columns; rules apply in order, first match wins per key.

    Conditions (all given must hold): ``account_ids`` (usage account), ``services`` (product code),
    ``resource_prefixes`` (resource id or bucket name prefix), ``tag_equals`` (raw provider tag →
    value; keys are matched with the same folding as schema keys). Values come from ``set``
    (constants) or ``set_from_tag`` (another raw tag's value, translated by ``value_map`` if given).
    A filled value is validated like a real tag and its provenance is the rule's name.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    set: dict[str, str] = {}
    set_from_tag: dict[str, str] = {}
    value_map: dict[str, str] | None = None
    account_ids: list[str] | None = None
    services: list[str] | None = None
    resource_prefixes: list[str] | None = None
    tag_equals: dict[str, str] | None = None

    @model_validator(mode="after")
    def _does_something(self) -> "VirtualTagRule":
        if not self.set and not self.set_from_tag:
            raise ValueError(f"virtual tag rule {self.name!r} sets nothing (give set or set_from_tag)")
        if not any([self.account_ids, self.services, self.resource_prefixes, self.tag_equals, self.set_from_tag]):
            raise ValueError(f"virtual tag rule {self.name!r} has no condition and would match every line")
        return self


class EnforcementConfig(_Model):
    """What the generated guardrail policies cover (``cost-pipeline policies``)."""

    aws_create_actions: dict[str, str] = {"ec2:RunInstances": "arn:aws:ec2:*:*:instance/*"}
    aws_tag_policy_enforced_for: list[str] = ["ec2:instance"]
    gcp_resource_types: list[str] = ["compute.googleapis.com/Instance"]


class TaggingConfig(_Model):
    keys: list[TagKey] = Field(default_factory=_default_tag_keys)
    aliases: dict[str, list[str]] = {}
    teams: dict[str, Team] = {}
    virtual_tags: list[VirtualTagRule] = []
    enforcement: EnforcementConfig = EnforcementConfig()
    untagged_warn_share: float = Field(default=0.15, ge=0, le=1)
    untagged_error_share: float = Field(default=0.40, ge=0, le=1)

    @model_validator(mode="after")
    def _team_key_present(self) -> "TaggingConfig":
        columns = [k.column for k in self.keys]
        if "team" not in columns:
            raise ValueError("tagging.keys must define the key whose column is 'team'")
        if len(set(columns)) != len(columns):
            raise ValueError("tagging.keys: two keys map to the same column")
        known = {k.key for k in self.keys}
        for where, used in [("aliases", self.aliases)] + [
            (f"virtual_tags[{r.name}]", {**r.set, **r.set_from_tag}) for r in self.virtual_tags
        ]:
            unknown = sorted(set(used) - known)
            if unknown:
                raise ValueError(f"tagging.{where} names key(s) not in the schema: {unknown}")
        if self.untagged_error_share < self.untagged_warn_share:
            raise ValueError("tagging.untagged_error_share must be >= untagged_warn_share")
        return self

    def key(self, name: str) -> TagKey:
        return next(k for k in self.keys if k.key == name)


class PoolSelect(_Model):
    """Which cost lines belong to a shared pool; every condition given must hold."""

    account_ids: list[str] | None = None
    services: list[str] | None = None
    resource_prefixes: list[str] | None = None
    tags: dict[str, str] | None = None  # canonical tag key -> value, after normalization and virtual tags

    @model_validator(mode="after")
    def _not_everything(self) -> "PoolSelect":
        if not any([self.account_ids, self.services, self.resource_prefixes, self.tags]):
            raise ValueError("a pool's select needs at least one condition")
        return self


Resource = Literal["cpu", "memory", "gpu"]


class KubernetesDriver(_Model):
    """Prorate a cluster by each namespace's CPU, memory and GPU (see lib/drivers/kubernetes.py)."""

    kind: Literal["kubernetes"]
    basis: Literal["max_request_usage", "requests"] = "max_request_usage"
    idle: Literal["share", "owner"] = "share"
    weights: dict[Resource, float] | None = None  # default cpu:memory 9:1, with GPUs gpu:cpu:memory 9:0.9:0.1
    requests: str = "k8s_requests"  # kube_pod_container_resource_requests summed by namespace, resource
    cpu_usage: str | None = "k8s_cpu_usage"
    memory_usage: str | None = "k8s_memory_usage"
    capacity: str | None = "k8s_node_capacity"  # kube_node_status_capacity summed by resource
    namespace_labels: dict[str, str] = {
        "team": "label_ml_team",
        "project": "label_ml_project",
        "workload_type": "label_ml_workload_type",
        "environment": "label_ml_environment",
    }
    namespaces: dict[str, dict[str, str]] = {}  # namespace -> {team, project, ...}; wins over labels
    mig_slices: int = Field(default=7, ge=1)  # compute slices per GPU (A100/H100: 7)

    @field_validator("weights")
    @classmethod
    def _positive(cls, value):
        if value is not None and (any(w < 0 for w in value.values()) or sum(value.values()) <= 0):
            raise ValueError("weights must be non-negative with a positive sum")
        return value


class MetricDriver(_Model):
    """Prorate by the integral over the day of any per-tenant Prometheus series."""

    kind: Literal["metric"]
    query: str
    label: str
    label_map: dict[str, str] = {}  # label value (tenant, prefix) -> team


class FixedDriver(_Model):
    kind: Literal["fixed"]
    shares: dict[str, float]  # team -> percent

    @field_validator("shares")
    @classmethod
    def _hundred(cls, value):
        if abs(sum(value.values()) - 100) > 1e-9 or any(v < 0 for v in value.values()):
            raise ValueError(f"fixed shares must be non-negative and add up to 100, got {sum(value.values())}")
        return value


class EvenDriver(_Model):
    kind: Literal["even"]


class Pool(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    owner_team: str = "platform"
    select: PoolSelect
    driver: KubernetesDriver | MetricDriver | FixedDriver | EvenDriver = Field(discriminator="kind")


class AllocationConfig(_Model):
    pools: list[Pool] = []

    @model_validator(mode="after")
    def _unique(self) -> "AllocationConfig":
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"allocation.pools: duplicate pool name in {names}")
        return self


class Settings(_Model):
    lake_uri: str  # a local folder or s3://bucket/prefix
    lake_endpoint_url: str | None = None  # S3-compatible endpoint for the lake (MinIO, a test server)
    lake_region: str | None = None
    partitions_start_date: dt.date = dt.date(2026, 1, 1)
    billing_sources: list[BillingSource] = Field(min_length=1)
    usage: UsageConfig = UsageConfig()
    slack: SlackConfig = SlackConfig()
    tagging: TaggingConfig = TaggingConfig()
    allocation: AllocationConfig = AllocationConfig()
    source_path: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_sources(self) -> "Settings":
        names = [s.name for s in self.billing_sources]
        if len(set(names)) != len(names):
            raise ValueError(f"billing_sources: duplicate name in {names}")
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
