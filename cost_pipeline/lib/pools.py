"""Shared pools: which lines are shared, and how each pool's exact cost is split by its driver.

A line belongs to the first pool (in config order) whose ``select`` matches it. Pool lines are
not tag-compliance failures even when their tags are incomplete: the driver, not the tags, says
who pays. Each pool's cost, per day and currency, is split with :func:`split_exact`, so the parts
add up to the pool's cost to the last unit; a pool without usage data stays ``unattributed``
with the reason ``no_usage:<pool>``.
"""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from cost_pipeline.config import (
    EvenDriver,
    FixedDriver,
    KubernetesDriver,
    MetricDriver,
    Pool,
    TaggingConfig,
)
from cost_pipeline.lib.drivers import validated
from cost_pipeline.lib.drivers.kubernetes import kubernetes_shares
from cost_pipeline.lib.drivers.simple import even_shares, fixed_shares, metric_shares
from cost_pipeline.lib.money import split_exact
from cost_pipeline.lib.selectors import line_condition
from cost_pipeline.lib.tags import TAG_COLUMNS_REASON, raw_tag_keys, tag_plan, tag_value


def tag_condition(key: str, value: str, schema: TaggingConfig, raw_keys: list[str]) -> pl.Expr:
    """A schema key (or one of its aliases) compares the canonical value, after normalization and
    virtual tags; any other key is a provider tag as delivered (``aws:eks:cluster-name``,
    ``user:team``, ``goog-k8s-cluster-name``), matched with the same key folding, value as given."""
    canonical = schema.key_for(key)
    if canonical is not None:
        return (pl.col(canonical.column) == value.strip().lower()).fill_null(False)
    return (tag_value(raw_keys, [key]) == value).fill_null(False)


def assign_pools(tagged: pl.LazyFrame, pools: list[Pool], schema: TaggingConfig, raw_keys: list[str]) -> pl.LazyFrame:
    """Add ``pool``: the name of the first pool selecting the line, else null."""
    if not pools:
        return tagged.with_columns(pool=pl.lit(None, pl.String))
    choices = []
    for pool in pools:
        sel = pool.select
        cond = line_condition(sel.account_ids, sel.services, sel.resource_prefixes)
        for key, value in (sel.tags or {}).items():
            cond &= tag_condition(key, value, schema, raw_keys)
        choices.append(pl.when(cond).then(pl.lit(pool.name)))
    return tagged.with_columns(pool=pl.coalesce(choices))


def classify(lines: pl.DataFrame, schema: TaggingConfig, pools: list[Pool]) -> pl.DataFrame:
    """:func:`classify_plan` for a day already in memory."""
    return classify_plan(lines.lazy(), raw_tag_keys(lines), schema, pools).collect()


def classify_plan(lines: pl.LazyFrame, raw_keys: list[str], schema: TaggingConfig, pools: list[Pool]) -> pl.LazyFrame:
    """Canonical tags, the pool of each line, and ``tag_reason`` for lines no pool takes over, as
    one lazy plan: a day scanned from the lake streams through it in chunks."""
    classified = assign_pools(tag_plan(lines, raw_keys, schema), pools, schema, raw_keys)
    return classified.with_columns(
        pl.when(pl.col("pool").is_null()).then(pl.col(TAG_COLUMNS_REASON)).alias(TAG_COLUMNS_REASON)
    )


def driver_shares(pool: Pool, samples: pl.DataFrame, schema: TaggingConfig, active_teams: list[str]) -> pl.DataFrame | None:
    """The pool's recipients and weights, with usage labels validated like tags (``lib/drivers.validated``)."""
    driver = pool.driver
    if isinstance(driver, KubernetesDriver):
        shares = kubernetes_shares(samples, driver, pool.owner_team)
    elif isinstance(driver, MetricDriver):
        shares = metric_shares(samples, driver)
    elif isinstance(driver, FixedDriver):
        shares = fixed_shares(driver)
    elif isinstance(driver, EvenDriver):
        shares = even_shares(driver, active_teams)
    else:
        raise TypeError(f"unknown driver {driver!r}")
    return None if shares is None else validated(shares, schema)


def split_pool(cost: Decimal, shares: pl.DataFrame) -> pl.DataFrame:
    """The recipients with ``amount``: the exact split of ``cost`` by their weights."""
    shares = shares.sort("team", "project", "workload_type", "environment", "reason", nulls_last=True)
    amounts = split_exact(cost, shares["weight"].to_list())
    return shares.with_columns(amount=pl.Series(amounts, dtype=pl.Decimal(38, 12))).drop("weight")
