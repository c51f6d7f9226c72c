"""``make bench``: throughput of each stage, as ratios to a plain Parquet scan of the same files.

Machines here are shared and noisy, so the numbers that matter are the ratios measured in one run:
how much slower normalizing, tagging and allocating a day is than merely reading its bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

import polars as pl

from cost_pipeline.config import BillingSource, bundled_config_path, load_settings
from cost_pipeline.lib.allocate import allocate
from cost_pipeline.lib.billing.fingerprint import day_fingerprint
from cost_pipeline.lib.billing.sources import read_source_day
from cost_pipeline.lib.pools import classify
from cost_pipeline.lib.tags import quarantine
from cost_pipeline.lib.usage import read_extracts
from cost_pipeline.sample.generate import generate


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--lines-per-day", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=None, help="keep the generated data here")
    args = parser.parse_args()
    start = dt.date(2026, 9, 1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        t = time.perf_counter()
        generate(out, start, args.days, args.lines_per_day, seed=1)
        gen = time.perf_counter() - t
        source = BillingSource(name="aws-main", format="aws_cur2", uri=str(out / "billing" / "aws"))
        day = start
        files = sorted((out / "billing" / "aws" / "data" / f"BILLING_PERIOD={day:%Y-%m}").glob(f"*{day.day:05d}.snappy.parquet"))
        demo = load_settings(bundled_config_path())
        schema, pools = demo.tagging, demo.allocation.pools
        samples = read_extracts(out / "usage", day)

        plain = _best(lambda: pl.scan_parquet(files).select(pl.all().exclude("product", "cost_category")).collect(engine="streaming"), args.repeat)
        lines = read_source_day(source, day)
        ingest = _best(lambda: read_source_day(source, day), args.repeat)
        tagged = classify(lines, schema, pools)
        tag = _best(lambda: classify(lines, schema, pools), args.repeat)
        quar = _best(lambda: quarantine(tagged), args.repeat)
        alloc = _best(lambda: allocate(tagged, "bench", pools, samples, demo.tagging), args.repeat)
        fingerprint = _best(lambda: day_fingerprint(lines), args.repeat)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = lines.height
    print(f"lines in day: {n:,} (generated {args.days} day(s) in {gen:.1f}s, {args.days * n / gen:,.0f} lines/s)")
    print(f"{'stage':<28}{'seconds':>10}{'lines/s':>14}{'x plain scan':>14}")
    stages = [
        ("plain parquet scan", plain), ("read + normalize + amortize", ingest), ("tags + virtual tags + pools", tag),
        ("quarantine", quar), ("allocate (direct + 4 pools)", alloc), ("day fingerprint", fingerprint),
    ]
    for name, secs in stages:
        print(f"{name:<28}{secs:>10.3f}{n / secs:>14,.0f}{secs / plain:>14.2f}")
    total = ingest + tag + quar + alloc + fingerprint
    print(f"{'whole day (sum of stages)':<28}{total:>10.3f}{n / total:>14,.0f}{total / plain:>14.2f}")
    print(f"peak RSS: {rss:,.0f} MiB")


if __name__ == "__main__":
    main()
