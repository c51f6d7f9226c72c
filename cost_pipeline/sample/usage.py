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
    rng = np.random.default_rng([seed, day.toordinal(), 1])
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    hours = 24
    out: dict[str, dict] = {}
    k8s = {"cpu": [], "memory": [], "gpu": [], "cpu_usage": [], "memory_usage": []}
    for ns, team in NAMESPACES.items():
        labels = {"namespace": ns, "label_ml_team": team}
        cpu_req = np.full(hours, float(rng.integers(4, 64)))
        mem_req = cpu_req * 4 * 2**30
        k8s["cpu"].append(({**labels, "resource": "cpu"}, cpu_req))
        k8s["memory"].append(({**labels, "resource": "memory"}, mem_req))
        if ns.endswith("training"):
            k8s["gpu"].append(({**labels, "resource": "nvidia_com_gpu"}, np.full(hours, float(rng.integers(0, 5)))))
        k8s["cpu_usage"].append((labels, cpu_req * rng.uniform(0.3, 1.2, hours)))
        k8s["memory_usage"].append((labels, mem_req * rng.uniform(0.4, 1.1, hours)))
    out["k8s_cpu_requests"] = _matrix(k8s["cpu"], start)
    out["k8s_memory_requests"] = _matrix(k8s["memory"], start)
    out["k8s_gpu_requests"] = _matrix(k8s["gpu"], start)
    out["k8s_cpu_usage"] = _matrix(k8s["cpu_usage"], start)
    out["k8s_memory_usage"] = _matrix(k8s["memory_usage"], start)
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
