"""``cost-pipeline sample``: billing, usage and ground truth for the fictional organisation."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

from cost_pipeline.sample import org
from cost_pipeline.sample.cur2 import SampleSpec, write_cur2
from cost_pipeline.sample.usage import write_usage


def _anomalies(spec: SampleSpec) -> list[tuple[dt.date, str, float]]:
    """Spikes on days with at least two weeks of history before them, so detectors have a baseline."""
    rng = np.random.default_rng([spec.seed, 99])
    if spec.days < 21 or spec.anomalies == 0:
        return []
    offsets = rng.choice(np.arange(14, spec.days), size=min(spec.anomalies, spec.days - 14), replace=False)
    teams = org.WORKLOAD_TEAMS[:4]
    return [
        (spec.start + dt.timedelta(days=int(o)), teams[i % len(teams)], float(round(rng.uniform(3.0, 5.0), 2)))
        for i, o in enumerate(sorted(offsets))
    ]


def _shifts(spec: SampleSpec) -> tuple[list, list]:
    """A sustained level shift (needs 45 days: two weeks of baseline, a week of shift) and new spend (35 days)."""
    rng = np.random.default_rng([spec.seed, 101])
    teams = org.WORKLOAD_TEAMS[:4]
    shifts = new = []
    if spec.days >= 45:
        shifts = [(spec.start + dt.timedelta(days=int(rng.integers(spec.days - 21, spec.days - 9))), teams[int(rng.integers(0, 4))], 1.8)]
    if spec.days >= 35:
        team = teams[int(rng.integers(0, 4))]
        new = [(spec.start + dt.timedelta(days=int(rng.integers(28, spec.days - 4))), team, f"{team.split('-')[0]}-llm-pilot")]
    return shifts, new


def generate(out: Path, start: dt.date, days: int, lines_per_day: int, seed: int, exact_lines: bool = False) -> dict:
    """``exact_lines``: a day holds ``lines_per_day`` CUR lines in all (the benchmark's sizes), instead of
    that many usage lines plus ~31 % Savings Plan negations (the demo's and the tests' data)."""
    spec = SampleSpec(start=start, days=days, lines_per_day=lines_per_day, seed=seed, exact_lines=exact_lines)
    spec.anomaly_days = _anomalies(spec)
    spec.level_shifts, spec.new_spend = _shifts(spec)
    truth = write_cur2(out / "billing" / "aws", spec)
    write_usage(out / "usage", start, days, seed)
    gt = out / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    with open(gt / "untagged_lines.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["date", "line_item_id", "defect", "expected_reason"])
        writer.writeheader()
        writer.writerows(truth)
    with open(gt / "anomalies.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["date", "team", "kind", "project", "factor"])
        writer.writerows([(d.isoformat(), t, "spike", "", f) for d, t, f in spec.anomaly_days])
        writer.writerows([(d.isoformat(), t, "level_shift", "", f) for d, t, f in spec.level_shifts])
        writer.writerows([(d.isoformat(), t, "new_spend", p, 1.5) for d, t, p in spec.new_spend])
    return {"billing": out / "billing" / "aws", "usage": out / "usage", "ground_truth": gt, "tag_defects": len(truth)}
