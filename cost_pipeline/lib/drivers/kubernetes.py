"""Kubernetes clusters prorated by what each namespace reserved or used, resource by resource.

Formulas (one pool, one day; t = the query steps of the day, uniform):
- basis[ns, r, t] = max(request, usage) (``basis: max_request_usage``, OpenCost's rule) or the
  request alone (``basis: requests``); GPU usage is not measured, so GPUs are always by request.
  GPU requests count whole GPUs (``nvidia_com_gpu``) plus MIG slices weighted by their size:
  ``nvidia_com_mig_<k>g_<m>gb`` counts k / ``mig_slices`` of a GPU.
- C[ns, r] = Σ_t basis[ns, r, t];  K[r] = max(Σ_t capacity[r, t], Σ_ns C[ns, r]).
- The pool's cost is split over resources by weights w_r (default as AWS split cost allocation:
  cpu:memory = 9:1; when GPUs are present gpu:cpu:memory = 9:0.9:0.1), normalized over the
  resources the cluster has.
- ``idle: share``: ns pays Σ_r ŵ_r · C[ns,r] / Σ_ns C[ns,r]; idle capacity is spread pro rata.
  ``idle: owner``: ns pays Σ_r ŵ_r · C[ns,r] / K[r]; the rest, Σ_r ŵ_r · (1 − Σ_ns C[ns,r]/K[r]),
  is a visible line of the pool's owner with project ``__idle__``.
  A resource nobody used goes to the owner's idle line under either policy.
"""

from __future__ import annotations

import re

import polars as pl

from cost_pipeline.config import KubernetesDriver
from cost_pipeline.lib.drivers import IDLE_PROJECT, recipients
from cost_pipeline.lib.usage import label

_MIG = re.compile(r"^nvidia[._]com[/_]mig[-_](\d+)g[._](\d+)gb$")
DIMENSIONS = ["team", "project", "workload_type", "environment"]


def resource_kind(name: str, mig_slices: int) -> tuple[str, float] | None:
    """Kubernetes resource name → (cpu | memory | gpu, how many units of that kind one unit is)."""
    if name == "cpu":
        return "cpu", 1.0
    if name == "memory":
        return "memory", 1.0
    if name in ("nvidia_com_gpu", "nvidia.com/gpu"):
        return "gpu", 1.0
    mig = _MIG.match(name)
    if mig:
        return "gpu", int(mig.group(1)) / mig_slices
    return None


def _kinds(samples: pl.DataFrame, mig_slices: int) -> pl.DataFrame:
    names = samples.select(label("resource").unique().drop_nulls()).to_series().to_list()
    mapping = {n: resource_kind(n, mig_slices) for n in names}
    table = pl.DataFrame(
        {"resource": list(mapping), "kind": [m[0] if m else None for m in mapping.values()],
         "factor": [m[1] if m else None for m in mapping.values()]},
        schema={"resource": pl.String, "kind": pl.String, "factor": pl.Float64},
    )
    return samples.with_columns(resource=label("resource")).join(table, on="resource", how="inner").drop_nulls("kind")


def _namespace_dims(requests: pl.DataFrame, driver: KubernetesDriver) -> pl.DataFrame:
    dims = requests.select(
        label("namespace").alias("namespace"),
        *[label(lbl).alias(dim) for dim, lbl in driver.namespace_labels.items() if dim in DIMENSIONS],
    ).unique("namespace", keep="first")
    for dim in DIMENSIONS:
        if dim not in dims.columns:
            dims = dims.with_columns(pl.lit(None, pl.String).alias(dim))
    rows = []
    for row in dims.iter_rows(named=True):
        override = driver.namespaces.get(row["namespace"], {})
        rows.append({**row, **{d: override.get(d, row[d]) for d in DIMENSIONS}})
    return pl.DataFrame(rows, schema={"namespace": pl.String, **{d: pl.String for d in DIMENSIONS}})


def kubernetes_shares(samples: pl.DataFrame, driver: KubernetesDriver, owner_team: str) -> pl.DataFrame | None:
    requests = samples.filter(pl.col("query") == driver.requests)
    if requests.is_empty():
        return None
    req = (
        _kinds(requests, driver.mig_slices)
        .group_by(label("namespace").alias("namespace"), "kind", "timestamp")
        .agg((pl.col("value") * pl.col("factor")).sum().alias("request"))
    )
    basis = req
    if driver.basis == "max_request_usage":
        usage_parts = []
        for kind, query in (("cpu", driver.cpu_usage), ("memory", driver.memory_usage)):
            if query:
                usage_parts.append(
                    samples.filter(pl.col("query") == query)
                    .group_by(label("namespace").alias("namespace"), "timestamp")
                    .agg(pl.col("value").sum().alias("usage"))
                    .with_columns(kind=pl.lit(kind))
                )
        if usage_parts:
            usage = pl.concat(usage_parts, how="diagonal")
            basis = req.join(usage, on=["namespace", "kind", "timestamp"], how="full", coalesce=True).with_columns(
                request=pl.max_horizontal(pl.col("request").fill_null(0.0), pl.col("usage").fill_null(0.0))
            )
    consumed = basis.group_by("namespace", "kind").agg(pl.col("request").sum().alias("consumed"))
    totals = dict(consumed.group_by("kind").agg(pl.col("consumed").sum()).iter_rows())
    capacity: dict[str, float] = {}
    if driver.capacity:
        cap = samples.filter(pl.col("query") == driver.capacity)
        if not cap.is_empty():
            cap = _kinds(cap, driver.mig_slices).group_by("kind").agg((pl.col("value") * pl.col("factor")).sum())
            capacity = dict(cap.iter_rows())
    kinds = {k for k in set(totals) | set(capacity) if totals.get(k, 0) > 0 or capacity.get(k, 0) > 0}
    weights = driver.weights or (
        {"gpu": 9.0, "cpu": 0.9, "memory": 0.1} if "gpu" in kinds else {"cpu": 9.0, "memory": 1.0}
    )
    active = {k: w for k, w in weights.items() if k in kinds and w > 0}
    if not active:
        return None
    norm = sum(active.values())
    queries = [q for q in (driver.requests, driver.cpu_usage, driver.memory_usage) if q]
    dims = _namespace_dims(samples.filter(pl.col("query").is_in(queries) & label("namespace").is_not_null()), driver)
    shares: dict[str, float] = {}
    idle = 0.0
    for kind, weight in active.items():
        share = weight / norm
        used = totals.get(kind, 0.0)
        denominator = max(capacity.get(kind, 0.0), used) if driver.idle == "owner" else used
        if used <= 0:
            idle += share
            continue
        for namespace, value in consumed.filter(pl.col("kind") == kind).select("namespace", "consumed").iter_rows():
            shares[namespace] = shares.get(namespace, 0.0) + share * value / denominator
        idle += share * (1 - used / denominator)
    rows = [
        {**dims.filter(pl.col("namespace") == ns).drop("namespace").row(0, named=True), "weight": w}
        for ns, w in shares.items()
    ]
    if idle > 1e-15:
        rows.append({"team": owner_team, "project": IDLE_PROJECT, "workload_type": None, "environment": None, "weight": idle})
    return recipients(rows)
