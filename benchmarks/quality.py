"""Anomaly-detection and forecast quality on generated data, for ``make bench``.

Generates two months of the sample organisation (with the generator's injected spikes, level shift
and new spend), runs the pipeline through the CLI and prints ``cost-pipeline evaluate``: precision,
recall, F1, false alerts per team-month, and the forecast's error at mid-month.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from cost_pipeline.config import bundled_config_path
from cost_pipeline.sample.generate import generate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=61)
    parser.add_argument("--lines-per-day", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    import datetime as dt

    start = dt.date(2026, 9, 1)
    with tempfile.TemporaryDirectory(prefix="quality-") as folder:
        root = Path(folder)
        generate(root / "data", start, args.days, args.lines_per_day, args.seed)
        raw = yaml.safe_load(bundled_config_path().read_text())
        raw.update(lake_uri=str(root / "lake"), partitions_start_date=start.isoformat(),
                   billing_sources=[{"name": "aws-main", "format": "aws_cur2", "uri": str(root / "data" / "billing" / "aws")}],
                   usage={"extracts_uri": str(root / "data" / "usage"), "prometheus_url": None}, slack={"outbox_uri": str(root / "outbox")})
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump(raw))
        end = start + dt.timedelta(days=args.days - 1)
        cli = [sys.executable, "-m", "cost_pipeline.cli"]
        run = subprocess.run([*cli, "run", "--config", str(config), "--start", start.isoformat(), "--end", end.isoformat()],
                             capture_output=True, text=True)
        if run.returncode:
            print(run.stderr, file=sys.stderr)
            return run.returncode
        print(f"Anomaly and forecast quality: {args.days} days x {args.lines_per_day:,} lines (seed {args.seed})")
        return subprocess.run([*cli, "evaluate", "--config", str(config), "--truth", str(root / "data" / "ground_truth" / "anomalies.csv")]).returncode


if __name__ == "__main__":
    sys.exit(main())
