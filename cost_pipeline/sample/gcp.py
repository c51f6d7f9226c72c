"""A small GCP Cloud Billing detailed export (BigQuery JSON export style) for tests and demos."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from cost_pipeline.sample import org

SERVICES = [("6F81-5844-456A", "Compute Engine", "N1 Predefined Instance Core"), ("95FF-2EF5-5EA1", "Cloud Storage", "Standard Storage"),
            ("E505-1604-58F8", "Vertex AI", "Training A100 GPU")]


def gcp_rows(day: dt.date, n: int, seed: int, exported: dt.datetime | None = None) -> list[dict]:
    """``exported``: when the export wrote the rows (GCP keeps adding rows for past days for a while)."""
    exported = exported or dt.datetime.combine(day + dt.timedelta(days=1), dt.time(4), tzinfo=dt.UTC)
    rng = np.random.default_rng([seed, day.toordinal(), 3])
    rows = []
    for i in range(n):
        team = org.WORKLOAD_TEAMS[int(rng.integers(0, len(org.WORKLOAD_TEAMS)))]
        service_id, service, sku = SERVICES[int(rng.integers(0, len(SERVICES)))]
        start = dt.datetime.combine(day, dt.time(int(rng.integers(0, 24))), tzinfo=dt.UTC)
        cost = round(float(rng.lognormal(0, 1)), 6)
        credits = [{"name": "Sustained usage discount", "amount": round(-cost * 0.2, 6), "type": "SUSTAINED_USAGE_DISCOUNT", "id": "", "full_name": ""}] if i % 3 == 0 else []
        labels = [] if i % 10 == 0 else [{"key": "ml-team", "value": team}, {"key": "ml-workload-type", "value": "training"}, {"key": "ml-experiment-id", "value": f"exp-{i:04d}"}]
        rows.append({
            "billing_account_id": "01A2B3-C4D5E6-F7G8H9",
            "service": {"id": service_id, "description": service},
            "sku": {"id": f"SKU-{i % 7}", "description": sku},
            "usage_start_time": start.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "usage_end_time": (start + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "project": {"id": f"{team}-prod", "number": "1234", "name": f"{team}-prod",
                        "labels": [{"key": "ml-project", "value": org.TEAMS[team]["projects"][0]}, {"key": "ml-environment", "value": "prod"}, {"key": "ml-team", "value": "project-level"}]},
            "labels": labels,
            "location": {"location": "us-central1", "country": "US", "region": "us-central1", "zone": "us-central1-a"},
            "resource": {"name": f"vm-{i}", "global_name": f"//compute.googleapis.com/projects/{team}-prod/zones/us-central1-a/instances/vm-{i}"},
            "cost": cost,
            "currency": "USD",
            "cost_type": "regular",
            "usage": {"amount": 3600.0, "unit": "seconds"},
            "credits": credits,
            "invoice": {"month": f"{day:%Y%m}"},
            "cost_at_list": round(cost * 1.1, 6),
            "export_time": exported.strftime("%Y-%m-%d %H:%M:%S UTC"),
        })
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
