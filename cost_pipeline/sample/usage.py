"""Prometheus ``/api/v1/query_range`` extracts for the sample organisation, one file per query and day.

The bodies are what Prometheus returns (``resultType: matrix``, values as ``[unix_ts, "string"]``),
so the same reader serves extracts archived from a live Prometheus and these synthetic ones.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from cost_pipeline.sample import org

STEP_SECONDS = 3600
NAMESPACES = {
    f"{team}-{suffix}": team
    for team in org.WORKLOAD_TEAMS
    for suffix in ("training", "serving")
}
# query name -> (metric name, label for the tenant, base level per tenant)
TENANT_METRICS = {
    "monitoring_active_series": ("cortex_ingester_active_series", "user", 250_000.0),
    "feature_store_requests": ("feature_store_requests_total", "team", 1_200.0),
    "data_lake_bytes": ("s3_bucket_prefix_bytes", "prefix", 4.0e12),
}


def _matrix(series: list[tuple[dict, np.ndarray]], start: float) -> dict:
    result = []
    for metric, values in series:
        points = [[start + i * STEP_SECONDS, f"{v:.6g}"] for i, v in enumerate(values)]
        result.append({"metric": metric, "values": points})
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def day_extracts(day: dt.date, seed: int) -> dict[str, dict]:
    """kube-state-metrics and cAdvisor style series per namespace, plus per-tenant pool metrics."""
    rng = np.random.default_rng([seed, day.toordinal(), 1])
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    hours = 24
    requests, cpu_usage, memory_usage = [], [], []
    totals = {"cpu": np.zeros(hours), "memory": np.zeros(hours), "gpu": np.zeros(hours)}
    for ns, team in NAMESPACES.items():
        labels = {"namespace": ns, "label_ml_team": team}
        cpu_req = np.full(hours, float(rng.integers(4, 64)))
        mem_req = cpu_req * 4 * 2**30
        requests.append(({**labels, "resource": "cpu"}, cpu_req))
        requests.append(({**labels, "resource": "memory"}, mem_req))
        totals["cpu"] += cpu_req
        totals["memory"] += mem_req
        if ns.endswith("training"):
            gpus = np.full(hours, float(rng.integers(0, 3)))
            requests.append(({**labels, "resource": "nvidia_com_gpu"}, gpus))
            totals["gpu"] += gpus
        elif team == "search-ranking":  # a serving namespace on a MIG slice of a partitioned GPU
            requests.append(({**labels, "resource": "nvidia_com_mig_1g_10gb"}, np.full(hours, 1.0)))
            totals["gpu"] += 1 / 7
        cpu_usage.append((labels, cpu_req * rng.uniform(0.3, 1.2, hours)))
        memory_usage.append((labels, mem_req * rng.uniform(0.4, 1.1, hours)))
    capacity = [({"resource": r}, np.ceil(v.max() * 1.25) * np.ones(hours)) for r, v in
                (("cpu", totals["cpu"]), ("memory", totals["memory"]), ("nvidia_com_gpu", totals["gpu"]))]
    out = {
        "k8s_requests": _matrix(requests, start),
        "k8s_cpu_usage": _matrix(cpu_usage, start),
        "k8s_memory_usage": _matrix(memory_usage, start),
        "k8s_node_capacity": _matrix(capacity, start),
    }
    for name, (metric, label, base) in TENANT_METRICS.items():
        series = []
        for team in org.WORKLOAD_TEAMS:
            tenant = f"{team}/" if label == "prefix" else team
            level = base * rng.uniform(0.2, 1.5)
            series.append(({"__name__": metric, label: tenant}, level * rng.uniform(0.9, 1.1, hours)))
        out[name] = _matrix(series, start)
    return out


def write_usage(out: Path, start: dt.date, days: int, seed: int) -> None:
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        folder = out / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, body in day_extracts(day, seed).items():
            (folder / f"{name}.json").write_text(json.dumps(body, separators=(",", ":")))
