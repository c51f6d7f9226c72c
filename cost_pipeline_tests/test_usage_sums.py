"""A query's usage summed per labels and step: exactly, and the same on every run (pool shares come from it)."""

import datetime as dt
from collections import defaultdict

import numpy as np
import polars as pl

from cost_pipeline.lib.usage import SERIES_SCHEMA, Usage, query_sums

DAY = dt.date(2026, 9, 2)


def _usage(pods: int, steps: int, seed: int = 7) -> tuple[Usage, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = pods * steps
    values = rng.random(n) * 10.0 ** rng.integers(-3, 7, n)  # twelve orders of magnitude: float sums depend on their order
    points = pl.DataFrame({"date": [DAY] * n, "query": ["q"] * n, "series": np.repeat(np.arange(pods), steps).astype(np.int64),
                           "timestamp": np.tile(np.arange(steps) * 300.0, pods), "value": values})
    labels = [[{"key": "namespace", "value": f"ns-{i % 7}"}] + ([{"key": "gpu", "value": "a100"}] if i % 5 == 0 else []) for i in range(pods)]
    series = pl.DataFrame({"date": [DAY] * pods, "query": ["q"] * pods, "series": np.arange(pods).astype(np.int64), "labels": labels},
                          schema={**SERIES_SCHEMA, "labels": pl.List(pl.Struct({"key": pl.String, "value": pl.String}))})
    return Usage(points.lazy(), series.with_columns(pl.col("labels").cast(SERIES_SCHEMA["labels"]))), values


def test_a_querys_sums_are_exact_and_the_same_on_every_run():
    pods, steps = 4000, 288
    usage, values = _usage(pods, steps)
    runs = [query_sums(usage, "q", ["namespace", "gpu", "timestamp"]).sort("namespace", "gpu", "timestamp") for _ in range(4)]
    assert all(runs[0].equals(run) for run in runs[1:])  # floats added in the threads' order differed from run to run
    # by hand: each value in whole units of 2^-40 (truncated), summed as Python integers
    units = defaultdict(int)
    for i, v in enumerate(values.tolist()):
        pod, step = divmod(i, steps)
        units[(f"ns-{pod % 7}", "a100" if pod % 5 == 0 else None, step * 300.0)] += int(v * 2.0**40)
    got = {(r["namespace"], r["gpu"], r["timestamp"]): r["value"] for r in runs[0].iter_rows(named=True)}
    assert len(got) == 7 * 2 * steps == len(units)
    assert got == {key: float(total) / 2.0**40 for key, total in units.items()}


def test_sums_of_values_beyond_the_exact_range_are_still_sums():
    usage, _ = _usage(3, 2)
    huge = Usage(usage.points.with_columns(value=pl.when(pl.col("series") == 1).then(pl.lit(3e30)).otherwise(pl.col("value"))), usage.series)
    sums = query_sums(huge, "q", ["namespace"]).sort("namespace")
    assert sums.filter(pl.col("namespace") == "ns-1")["value"].to_list() == [6e30]
    assert query_sums(huge, "q", ["timestamp"]).height == 2  # no labels asked: per step
