"""Shared pools and their drivers (formulas in ``cost_pipeline/lib/drivers/``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cost_pipeline.config.base import _Model


class PoolSelect(_Model):
    """Which cost lines belong to a shared pool; every condition given must hold."""

    account_ids: list[str] | None = None
    services: list[str] | None = None
    resource_prefixes: list[str] | None = None
    # tag key -> value: a schema key (ml-team, ...) compares the canonical value after normalization and
    # virtual tags; any other key is a provider tag as delivered (aws:eks:cluster-name, user:team, ...)
    tags: dict[str, str] | None = None

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
    namespace_labels_query: str | None = "kube_namespace_labels"  # kube_namespace_labels: namespace -> label_ml_*
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
