"""Who pays for each line: direct costs by tags, shared pools by their drivers, the rest unattributed.

Every cent of effective cost lands in exactly one row of ``allocated_costs``: per day and currency
``sum(amount) == sum(cost_lines.effective_cost)`` exactly, because amounts are exact decimals summed
from the same lines. Spend that fails the tag schema is not dropped: it stays in the named bucket
``__unattributed__`` with the quarantine reason, so totals reconcile to the bill.
"""

from __future__ import annotations

import polars as pl

from cost_pipeline.config import Pool, TaggingConfig
from cost_pipeline.lib.money import MONEY
from cost_pipeline.lib.pools import driver_shares, split_pool
from cost_pipeline.lib.tags import TAG_COLUMNS_REASON
from cost_pipeline.lib.usage import Usage

UNATTRIBUTED_TEAM = "__unattributed__"
DIMENSIONS = ["team", "project", "workload_type", "environment", "experiment_id"]
ALLOCATED_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "team": pl.String(),
    "project": pl.String(),
    "workload_type": pl.String(),
    "environment": pl.String(),
    "experiment_id": pl.String(),
    "allocation": pl.String(),
    "pool": pl.String(),
    "amount": MONEY,
    "currency": pl.String(),
    "rules_version": pl.String(),
    "reason": pl.String(),
    "tag_source": pl.String(),
    "service": pl.String(),  # provider service of direct and unattributed rows (anomalies by team × service); null for shared
}


def allocate(
    tagged: pl.DataFrame | pl.LazyFrame,
    rules_version: str,
    pools: list[Pool] = (),
    samples: pl.DataFrame | None = None,
    schema: TaggingConfig | None = None,
) -> pl.DataFrame:
    """Allocation rows: direct (by tags), shared (pools by their drivers) and unattributed.

    ``tagged`` comes from :func:`classify` (or :func:`apply_tag_schema` when there are no pools).
    """
    summed = allocation_sums(tagged).collect(engine="streaming")
    return allocate_sums(summed, rules_version, pools, samples, schema)


SUM_KEYS = ["date", "currency", "pool", TAG_COLUMNS_REASON, *DIMENSIONS, "tag_source", "service"]


def _normalized(tagged: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    lazy = tagged.lazy()
    columns = lazy.collect_schema().names()
    if "pool" not in columns:
        lazy = lazy.with_columns(pool=pl.lit(None, pl.String))
    if "service" not in columns:
        lazy = lazy.with_columns(service=pl.lit(None, pl.String))
    # a schema may define fewer keys than the five dimensions; absent ones stay null
    return lazy.with_columns([pl.lit(None, pl.String).alias(d) for d in DIMENSIONS if d not in columns])


def allocation_sums(tagged: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The day's lines summed by everything allocation distinguishes (small), as a lazy query."""
    return _normalized(tagged).group_by(SUM_KEYS).agg(pl.col("effective_cost").sum())


def attribution_sums(tagged: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """:func:`allocation_sums` by account too, with line counts: still small, and enough to derive both
    the allocation's sums (:func:`allocation_from_attribution_sums`) and the compliance summary, so a
    single group-by over the tagged lines serves both (several queries sharing one plan made Polars
    2.1 cache the whole day: 7 GiB at 13 M lines)."""
    lazy = _normalized(tagged)
    # lines already summed per combination (``lib/attribution``) carry their count
    count = pl.col("lines").sum() if "lines" in lazy.collect_schema().names() else pl.len()
    return lazy.group_by([*SUM_KEYS, "sub_account_id"]).agg(pl.col("effective_cost").sum(), count.alias("lines"))


def allocation_from_attribution_sums(sums: pl.DataFrame) -> pl.DataFrame:
    return sums.group_by(SUM_KEYS).agg(pl.col("effective_cost").sum())


def allocate_sums(
    summed: pl.DataFrame,
    rules_version: str,
    pools: list[Pool] = (),
    samples=None,
    schema: TaggingConfig | None = None,
) -> pl.DataFrame:
    """:func:`allocate` from :func:`allocation_sums`' result: direct, unattributed and shared rows."""
    unpooled = pl.col("pool").is_null()
    compliant = pl.col(TAG_COLUMNS_REASON).is_null() & unpooled
    direct = (
        summed.filter(compliant)
        .group_by(["date", *DIMENSIONS, "tag_source", "service", "currency"])
        .agg(pl.col("effective_cost").sum().alias("amount"))
        .with_columns(allocation=pl.lit("direct"), pool=pl.lit(None, pl.String), reason=pl.lit(None, pl.String))
    )
    unattributed = (
        summed.filter(unpooled & ~compliant)
        .group_by(["date", "currency", TAG_COLUMNS_REASON, "service"])
        .agg(pl.col("effective_cost").sum().alias("amount"))
        .with_columns(
            team=pl.lit(UNATTRIBUTED_TEAM),
            **{d: pl.lit(None, pl.String) for d in DIMENSIONS[1:]},
            allocation=pl.lit("unattributed"),
            pool=pl.lit(None, pl.String),
            reason=pl.col(TAG_COLUMNS_REASON),
            tag_source=pl.lit(None, pl.String),
        )
    )
    shared = _shared(summed, list(pools), samples, schema or TaggingConfig(), direct)
    rows = pl.concat([direct, unattributed, shared], how="diagonal_relaxed").with_columns(rules_version=pl.lit(rules_version))
    return (
        rows.select([pl.col(c).cast(t) for c, t in ALLOCATED_SCHEMA.items()])
        .sort(["date", "currency", "allocation", "pool", *DIMENSIONS, "tag_source", "service", "reason", "amount"], nulls_last=True)
    )


def _shared(tagged, pools, samples, schema, direct) -> pl.DataFrame:
    if not pools:
        return pl.DataFrame(schema={"date": pl.Date, "amount": MONEY})
    by_name = {p.name: p for p in pools}
    pooled = tagged.filter(pl.col("pool").is_not_null()).group_by("date", "pool", "currency").agg(
        pl.col("effective_cost").sum().alias("cost")
    )
    rows = []
    usage = Usage.of(samples)
    by_day = {} if usage.is_empty() else usage.by_day()
    for day, pool_name, currency, cost in pooled.sort("date", "pool", "currency").iter_rows():
        day_samples = by_day.get(day, Usage.of(None))
        active = direct.filter((pl.col("date") == day) & (pl.col("currency") == currency))["team"].unique().to_list()
        shares = driver_shares(by_name[pool_name], day_samples, schema, active)
        if shares is None or shares.is_empty():
            rows.append(
                pl.DataFrame(
                    {"team": [UNATTRIBUTED_TEAM], "amount": [cost], "allocation": ["unattributed"], "reason": [f"no_usage:{pool_name}"]},
                    schema_overrides={"amount": MONEY},
                )
            )
        else:
            rows.append(split_pool(cost, shares).with_columns(allocation=pl.lit("shared")))
        rows[-1] = rows[-1].with_columns(date=pl.lit(day), pool=pl.lit(pool_name), currency=pl.lit(currency), tag_source=pl.lit(None, pl.String))
    return pl.concat(rows, how="diagonal_relaxed") if rows else pl.DataFrame(schema={"date": pl.Date, "amount": MONEY})


def reconcile(allocated: pl.DataFrame, cost_lines: pl.DataFrame) -> pl.DataFrame:
    """Per day and currency: the bill's effective total, the allocated total and the difference."""
    bill = cost_lines.group_by("date", "currency").agg(pl.col("effective_cost").sum().alias("billed"))
    alloc = allocated.group_by("date", "currency").agg(pl.col("amount").sum().alias("allocated"))
    return (
        bill.join(alloc, on=["date", "currency"], how="full", coalesce=True)
        .with_columns(pl.col("billed", "allocated").fill_null(pl.lit(0).cast(MONEY)))
        .with_columns(difference=pl.col("allocated") - pl.col("billed"))
        .sort("date", "currency")
    )
