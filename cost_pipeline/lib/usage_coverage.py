"""How well a day's usage samples cover what each shared pool's driver needs.

A pool whose driver query has no samples leaves its cost unattributed (``no_usage:<pool>``); a query
with samples for only part of the day splits the pool by that part alone. Coverage counts the UTC
hours of the day holding at least one sample of the query.
"""

from __future__ import annotations

import polars as pl

from cost_pipeline.config.allocation import Pool

MIN_HOURS = 20  # of 24: fewer and the split rests on part of the day


def driver_queries(pool: Pool) -> list[str]:
    driver = pool.driver
    if driver.kind == "kubernetes":
        return [q for q in (driver.requests, driver.cpu_usage, driver.memory_usage, driver.capacity) if q]
    if driver.kind == "metric":
        return [driver.query]
    return []


def pool_coverage(samples: pl.DataFrame | pl.LazyFrame, pools: list[Pool]) -> pl.DataFrame:
    """pool × query: samples, series and UTC hours with a sample."""
    wanted = pl.DataFrame([(p.name, q) for p in pools for q in driver_queries(p)], schema={"pool": pl.String, "query": pl.String}, orient="row")
    per_query = (
        samples.lazy()
        .group_by("query")
        .agg(pl.len().alias("samples"), pl.col("series").n_unique().alias("series"),
             (pl.col("timestamp") // 3600 % 24).n_unique().cast(pl.Int64).alias("hours"))
        .collect()
    )
    return (
        wanted.join(per_query, on="query", how="left")
        .with_columns(pl.col("samples", "series", "hours").fill_null(0))
        .sort("pool", "query")
    )


def short_queries(coverage: pl.DataFrame) -> pl.DataFrame:
    return coverage.filter(pl.col("hours") < MIN_HOURS)
