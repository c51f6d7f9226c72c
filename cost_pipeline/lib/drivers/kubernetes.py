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
from cost_pipeline.lib.usage import query_series, query_sums, series_labels

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


def _kinds(frame: pl.DataFrame, mig_slices: int) -> pl.DataFrame:
    """Add (kind, factor) from the ``resource`` column; resources that are none of cpu/memory/GPU drop out."""
    names = frame.select(pl.col("resource").unique().drop_nulls()).to_series().to_list()
    mapping = {n: resource_kind(n, mig_slices) for n in names}
    table = pl.DataFrame(
        {"resource": list(mapping), "kind": [m[0] if m else None for m in mapping.values()],
         "factor": [m[1] if m else None for m in mapping.values()]},
        schema={"resource": pl.String, "kind": pl.String, "factor": pl.Float64},
    )
    return frame.join(table, on="resource", how="inner").drop_nulls("kind")


def namespace_attributes(samples: pl.DataFrame, driver: KubernetesDriver) -> pl.DataFrame:
    """Team, project, workload type and environment of each namespace, whatever the extract names.

    Every extract the driver reads (requests, usage, and ``kube_namespace_labels``, the documented
    source) contributes the ``label_ml_*`` values it carries for a namespace; cAdvisor usage summed
    ``by (namespace)`` carries none, which is fine. Two different values for one namespace are a
    conflict: the namespace goes to ``unknown`` with reason ``conflicting_namespace_labels``.
    ``namespaces:`` in the config wins over labels.
    """
    queries = [q for q in (driver.requests, driver.cpu_usage, driver.memory_usage, driver.namespace_labels_query) if q]
    wanted = {dim: lbl for dim, lbl in driver.namespace_labels.items() if dim in DIMENSIONS}
    per_series = series_labels(samples, queries, ["namespace", *wanted.values()])
    values = per_series.filter(pl.col("namespace").is_not_null()).select(
        "namespace", *[pl.col(lbl).str.strip_chars().alias(dim) for dim, lbl in wanted.items()],
    )
    attributes = values.group_by("namespace").agg(
        *[pl.col(dim).drop_nulls().unique().sort().alias(f"_{dim}") for dim in wanted]
    )
    conflict = pl.any_horizontal([pl.col(f"_{dim}").list.len() > 1 for dim in wanted]) if wanted else pl.lit(False)
    attributes = attributes.with_columns(
        *[pl.when(pl.col(f"_{dim}").list.len() == 1).then(pl.col(f"_{dim}").list.first()).alias(dim) for dim in wanted],
        reason=pl.when(conflict).then(pl.lit("conflicting_namespace_labels")),
    ).with_columns(*[pl.lit(None, pl.String).alias(d) for d in DIMENSIONS if d not in wanted])
    out = []
    for row in attributes.select("namespace", *DIMENSIONS, "reason").iter_rows(named=True):
        override = driver.namespaces.get(row["namespace"])
        if override:
            row = {**row, **{d: override.get(d, row[d]) for d in DIMENSIONS}, "reason": None}
        elif row["reason"]:
            row = {**row, **{d: None for d in DIMENSIONS}}
        out.append(row)
    return pl.DataFrame(out, schema={"namespace": pl.String, **{d: pl.String for d in DIMENSIONS}, "reason": pl.String})


def kubernetes_shares(samples: pl.DataFrame, driver: KubernetesDriver, owner_team: str) -> pl.DataFrame | None:
    # summed per namespace, resource and step while streaming; the pods' samples are never held
    requests = query_sums(samples, driver.requests, ["namespace", "resource", "timestamp"])
    if requests.is_empty():
        return None
    # every float sum below over rows in one order (group-bys hand out rows and groups in any order,
    # and floats added in another order differ in their last bits: a rerun split a pool 1e-12 apart)
    req = (
        _kinds(requests.sort("namespace", "resource", "timestamp"), driver.mig_slices)
        .group_by("namespace", "kind", "timestamp", maintain_order=True)
        .agg((pl.col("value") * pl.col("factor")).sum().alias("request"))
    )
    basis = req
    if driver.basis == "max_request_usage":
        usage_parts = []
        for kind, query in (("cpu", driver.cpu_usage), ("memory", driver.memory_usage)):
            if query:
                usage_parts.append(query_sums(samples, query, ["namespace", "timestamp"]).rename({"value": "usage"}).with_columns(kind=pl.lit(kind)))
        if usage_parts:
            usage = pl.concat(usage_parts, how="diagonal")
            basis = req.join(usage, on=["namespace", "kind", "timestamp"], how="full", coalesce=True).with_columns(
                request=pl.max_horizontal(pl.col("request").fill_null(0.0), pl.col("usage").fill_null(0.0))
            )
    consumed = basis.sort("namespace", "kind", "timestamp").group_by("namespace", "kind", maintain_order=True).agg(pl.col("request").sum().alias("consumed"))
    totals = dict(consumed.group_by("kind", maintain_order=True).agg(pl.col("consumed").sum()).iter_rows())
    capacity: dict[str, float] = {}
    if driver.capacity:
        cap = query_series(samples, driver.capacity, ["resource"])
        if not cap.is_empty():
            cap = _kinds(cap.sort(pl.all()), driver.mig_slices).group_by("kind", maintain_order=True).agg((pl.col("value") * pl.col("factor")).sum())
            capacity = dict(cap.iter_rows())
    kinds = {k for k in set(totals) | set(capacity) if totals.get(k, 0) > 0 or capacity.get(k, 0) > 0}
    weights = driver.weights or (
        {"gpu": 9.0, "cpu": 0.9, "memory": 0.1} if "gpu" in kinds else {"cpu": 9.0, "memory": 1.0}
    )
    active = {k: w for k, w in weights.items() if k in kinds and w > 0}
    if not active:
        return None
    norm = sum(active.values())
    dims = namespace_attributes(samples, driver)
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
    of_namespace = {row.pop("namespace"): row for row in dims.iter_rows(named=True)}
    # a series without a namespace label has no attributes: its recipient's team is missing (lib/drivers.validated)
    unlabelled = {**dict.fromkeys(DIMENSIONS), "reason": None}
    rows = [{**of_namespace.get(ns, unlabelled), "weight": w} for ns, w in shares.items()]
    if idle > 1e-15:
        rows.append({"team": owner_team, "project": IDLE_PROJECT, "workload_type": None, "environment": None, "weight": idle, "reason": None})
    return recipients(rows)
