"""Prometheus usage as the lake keeps it: samples (query, series, timestamp, value) and each
series' labels, and what the allocation drivers read of them. Extract files and live answers are
parsed into these tables by ``lib/extracts.py``; samples keep their labels as a map, minus ``__name__``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

SAMPLES_SCHEMA = {
    "date": pl.Date(),
    "query": pl.String(),
    "series": pl.Int64(),
    "timestamp": pl.Float64(),
    "value": pl.Float64(),
    "labels": pl.Map(pl.String(), pl.String()),
}


# In the lake, samples and their series' labels are two tables joined on (date, query, series): a
# labels map repeated on each of 23 M samples cost more to write and read than everything else.
POINTS_SCHEMA = {k: v for k, v in SAMPLES_SCHEMA.items() if k != "labels"}
SERIES_SCHEMA = {k: SAMPLES_SCHEMA[k] for k in ("date", "query", "series", "labels")}


def of_day(day: dt.date) -> pl.Expr:
    """The samples a day keeps, whichever reader parsed them: inside the UTC day, NaN and ±Inf dropped."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    return (pl.col("timestamp") >= start) & (pl.col("timestamp") < start + 86400) & pl.col("value").is_finite()


def empty_parts() -> tuple[pl.DataFrame, pl.DataFrame]:
    return pl.DataFrame(schema=POINTS_SCHEMA), pl.DataFrame(schema=SERIES_SCHEMA)


def join_parts(points: pl.DataFrame | pl.LazyFrame, series: pl.DataFrame | pl.LazyFrame):
    """Samples with their series' labels (what the drivers read)."""
    return points.join(series.select("date", "query", "series", "labels"), on=["date", "query", "series"], how="left",
                       maintain_order="left").select(list(SAMPLES_SCHEMA))


@dataclass(frozen=True)
class Usage:
    """A day's usage as the lake keeps it: samples without labels, and one row of labels per series.

    Drivers look labels up per series and join them to the samples of one query at a time, so the
    labels of 23 M samples are never materialized. Read from the lake, ``points`` is a scan: each query's
    samples are read when a driver asks for them (20,000 pods: 23 M samples, ~1 GiB held at once before)."""

    points: pl.DataFrame | pl.LazyFrame  # POINTS_SCHEMA
    series: pl.DataFrame  # SERIES_SCHEMA

    @classmethod
    def of(cls, samples: "pl.DataFrame | Usage | None") -> "Usage":
        """From samples with a ``labels`` column (tests, older lakes), or as is."""
        if isinstance(samples, Usage):
            return samples
        if samples is None:
            return cls(*empty_parts())
        series = samples.group_by("date", "query", "series", maintain_order=True).agg(pl.col("labels").first())
        return cls(samples.select(list(POINTS_SCHEMA)), series.select(list(SERIES_SCHEMA)))

    def is_empty(self) -> bool:
        return self.series.is_empty() or self.points.lazy().select(pl.len()).collect().item() == 0

    def by_day(self) -> dict[dt.date, "Usage"]:
        days = self.points.lazy().select(pl.col("date").unique()).collect().to_series().to_list()
        if len(days) == 1:
            return {days[0]: self}
        return {d: Usage(self.points.filter(pl.col("date") == d), self.series.filter(pl.col("date") == d)) for d in days}


HELD_BELOW = 1_000_000  # samples: a day with fewer is read once and held (~16 MB), not scanned per query


def read_usage(lake, days: list[dt.date]) -> Usage:
    """The lake's usage of ``days`` (lakes written before the split hold the labels on every sample
    of ``usage`` and have no ``usage_series``). Samples stay a scan, read query by query, unless they
    are few: the drivers of a day without pods scanned the same small file ~10 times (a third of the
    day's allocation, ~0.04 s)."""
    points = lake.scan_days("usage", days)
    if "labels" in points.collect_schema().names():
        return Usage.of(points.select(list(SAMPLES_SCHEMA)).collect())
    points = points.select(list(POINTS_SCHEMA))
    if points.select(pl.len()).collect().item() < HELD_BELOW:
        points = points.collect()
    return Usage(points, lake.scan_days("usage_series", days).select(list(SERIES_SCHEMA)).collect())


def series_labels(samples: "pl.DataFrame | Usage", query: str | list[str], labels: list[str]) -> pl.DataFrame:
    """One row per series of a query (or of several, in the order of the day's series): its number and
    the given labels as columns."""
    usage = Usage.of(samples)
    chosen = pl.col("query") == query if isinstance(query, str) else pl.col("query").is_in(query)
    return usage.series.filter(chosen).select("series", *[pl.col("labels").map.get(name).alias(name) for name in labels])


EXACT_UNITS = 2.0**40  # a sample value in units of 2^-40 (~1e-12), exactly: scaling a float by a power of two is exact


def query_sums(samples: "pl.DataFrame | Usage", query: str, keys: list[str]) -> pl.DataFrame:
    """A query's sample values summed per ``keys`` (label names and/or ``timestamp``), streamed: a
    driver that needs namespaces × steps never holds the query's samples (11.5 M for 20,000 pods' requests).

    Summed exactly, as 128-bit integers of :data:`EXACT_UNITS`, so a rerun gets the same sums and so
    the same pool shares: the streaming engine adds a group's partial sums in the order its threads
    finish, and floats added in another order differ in their last bits (the bench's 20,000 pods: 2,203
    of 2,880 sums per namespace and step differed from one run to the next, by up to 1e-11). A value
    beyond 2^87 (~1.5e26) does not fit: the query is then summed as floats. Samples are grouped by a
    number per distinct combination of the labels, joined back after: 0.21-0.28 s instead of 0.46-0.54 s."""
    usage = Usage.of(samples)
    labels = [k for k in keys if k != "timestamp"]
    per_series = series_labels(usage, query, labels)
    combos = per_series.select(labels).unique(maintain_order=True).with_row_index("_combo") if labels else None
    points = usage.points.lazy().filter(pl.col("query") == query).select("series", "timestamp", "value")
    if combos is not None:
        points = points.join(per_series.join(combos, on=labels, how="left", nulls_equal=True).select("series", "_combo").lazy(),
                             on="series", how="left")
    by = [*(["_combo"] if labels else []), *(["timestamp"] if "timestamp" in keys else [])]
    units = (pl.col("value") * EXACT_UNITS).cast(pl.Int128, strict=False)
    sums = points.group_by(by).agg(units.sum().alias("_units"), units.is_null().sum().alias("_beyond"), pl.col("value").sum())
    sums = sums.collect(engine="streaming")
    if not sums["_beyond"].sum():
        sums = sums.with_columns(value=pl.col("_units").cast(pl.Float64) / EXACT_UNITS)
    sums = sums.drop("_units", "_beyond")
    if combos is not None:
        sums = sums.join(combos, on="_combo", how="left")
    return sums.select(*keys, "value")


def query_series(samples: "pl.DataFrame | Usage", query: str, labels: list[str]) -> pl.DataFrame:
    """One query's samples (series, timestamp, value) with the given labels as columns, looked up
    once per series and joined on the series number."""
    usage = Usage.of(samples)
    points = usage.points.lazy().filter(pl.col("query") == query).select("series", "timestamp", "value").collect()
    return points.join(series_labels(usage, query, labels), on="series", how="left")
