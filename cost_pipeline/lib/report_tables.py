"""The report tables behind dashboards, statements and digests, as plain functions over frames.

They are small (grouped by what people filter on), exact (Decimal sums of ``allocated_costs``) and
carry cent columns rounded once by largest remainder, so every printed table adds up.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from cost_pipeline.config import Pool, TaggingConfig
from cost_pipeline.lib.cents import with_cents
from cost_pipeline.lib.drivers import IDLE_PROJECT
from cost_pipeline.lib.money import MONEY, zero

DETAIL_KEYS = ["date", "team", "project", "workload_type", "environment", "experiment_id", "service", "allocation", "pool", "reason", "currency"]
KINDS = ["direct", "shared", "unattributed"]


def team_cost_detail(allocated: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """team × day × project × workload type × environment × experiment × service × allocation/pool: what the
    dashboards filter and the statements group. ``rules_version`` says which rules produced the row."""
    return (
        allocated.lazy()
        .group_by(*DETAIL_KEYS, "rules_version")
        .agg(pl.col("amount").sum())
        .sort([*DETAIL_KEYS, "rules_version"], nulls_last=True)
        .collect()
    )


def month_of(column: str = "date") -> pl.Expr:
    return pl.col(column).dt.strftime("%Y-%m")


def team_months(daily: pl.DataFrame, as_of: dt.date | None = None) -> pl.DataFrame:
    """team × month: the month's total (to date for the current one), the previous month's, and the change.

    ``as_of``: the last day with data; its month is marked ``month_to_date``. Cents add up per month
    and currency across teams, and ``change_cents`` is the difference of the printed cents.
    """
    if daily.is_empty():
        return pl.DataFrame(schema={"month": pl.String, "team": pl.String, "currency": pl.String, "total": MONEY})
    as_of = as_of or daily["date"].max()
    months = (
        daily.with_columns(month=month_of())
        .group_by("month", "team", "currency")
        .agg(*[pl.col(k).sum() for k in [*KINDS, "total"]], pl.col("date").n_unique().alias("days"))
        .sort("currency", "month", "team")
    )
    months = with_cents(months, "total", ["month", "currency"], parts=KINDS)
    previous = months.select(
        pl.col("month").str.to_date("%Y-%m").dt.offset_by("1mo").dt.strftime("%Y-%m").alias("month"),
        "team", "currency", pl.col("total").alias("previous_total"), pl.col("total_cents").alias("previous_cents"),
    )
    return (
        months.join(previous, on=["month", "team", "currency"], how="left")
        .with_columns(
            pl.col("previous_total").fill_null(zero()),
            pl.col("previous_cents").fill_null(pl.lit(0).cast(pl.Decimal(38, 2))),
            month_to_date=pl.col("month") == as_of.strftime("%Y-%m"),
        )
        .with_columns(change_cents=pl.col("total_cents") - pl.col("previous_cents"))
        .sort("currency", "month", "total", descending=[False, False, True])
    )


def experiment_costs(detail: pl.DataFrame) -> pl.DataFrame:
    """One row per training run (``ml-experiment-id``): its team, project, first and last day, days
    with cost, and its direct and shared cost (shared when a pool's driver names the run)."""
    keys = ["team", "project", "experiment_id", "currency"]
    # per run and day first, then per run: streamed, and without a filter per group (the one-step
    # group-by with filtered sums and distinct days peaked at 5.9 GiB for a year's 8.6 M rows)
    rows = (
        detail.lazy().filter(pl.col("experiment_id").is_not_null() & (pl.col("allocation") != "unattributed"))
        .group_by(*keys, "date")
        .agg(*[pl.when(pl.col("allocation") == k).then(pl.col("amount")).sum().alias(k) for k in ("direct", "shared")], pl.col("amount").sum().alias("total"))
        .group_by(keys)
        .agg(pl.col("date").min().alias("first_day"), pl.col("date").max().alias("last_day"), pl.len().cast(pl.UInt32).alias("days"),
             pl.col("direct", "shared", "total").sum())
        .sort("currency", "total", "experiment_id", "team", "project", descending=[False, True, False, False, False])
        .collect(engine="streaming")
    )
    return with_cents(rows, "total", ["currency"], parts=["direct", "shared"])


def driver_text(pool: Pool) -> str:
    """How the pool is split, in words, for statements and dashboards ("why this share")."""
    d = pool.driver
    if d.kind == "kubernetes":
        basis = "max(request, usage)" if d.basis == "max_request_usage" else "requests"
        idle = "idle capacity shared pro rata" if d.idle == "share" else f"idle capacity paid by {pool.owner_team}"
        return f"Kubernetes namespaces' {basis} of CPU, memory and GPU; {idle}"
    if d.kind == "metric":
        return f"each tenant's share of Prometheus {d.query} (by {d.label})"
    if d.kind == "fixed":
        return "fixed shares: " + ", ".join(f"{t} {s:g}%" for t, s in sorted(d.shares.items()))
    return "split evenly among the teams with direct cost that day"


def pool_shares(detail: pl.DataFrame, pools: list[Pool]) -> pl.DataFrame:
    """month × pool × team: what each team pays of each shared pool, its share, and the idle part
    (the owner's ``__idle__`` line), with the driver that decided it."""
    pooled = detail.filter(pl.col("pool").is_not_null())
    if pooled.is_empty():
        return pl.DataFrame(schema={"month": pl.String, "pool": pl.String, "team": pl.String, "currency": pl.String, "amount": MONEY})
    rows = (
        pooled.with_columns(month=month_of())
        .group_by("month", "pool", "team", "currency")
        .agg(
            pl.col("amount").sum(),
            pl.col("amount").filter(pl.col("project") == IDLE_PROJECT).sum().alias("idle"),
        )
        .with_columns(pool_total=pl.col("amount").sum().over("month", "pool", "currency"))
        # a pool whose credits cancel its charges has a zero total: no share rather than inf/NaN
        .with_columns(share=pl.when(pl.col("pool_total") != 0).then(pl.col("amount").cast(pl.Float64) / pl.col("pool_total").cast(pl.Float64)))
        .sort("month", "pool", "currency", "amount", descending=[False, False, False, True])
    )
    drivers = pl.DataFrame({"pool": [p.name for p in pools], "driver": [driver_text(p) for p in pools]}, schema={"pool": pl.String, "driver": pl.String})
    rows = with_cents(rows.join(drivers, on="pool", how="left"), "amount", ["month", "pool", "currency"])
    return rows.with_columns(pool_total_cents=pl.col("amount_cents").sum().over("month", "pool", "currency"))


def account_teams(tagging: TaggingConfig) -> pl.DataFrame:
    """account → team from the virtual-tag rules that set the team by account: how untagged spend
    can still be tied to a team (its owner should tag it)."""
    key = next(k.key for k in tagging.keys if k.column == "team")
    pairs = {(a, rule.set[key]) for rule in tagging.virtual_tags if key in rule.set for a in (rule.account_ids or [])}
    return pl.DataFrame(sorted(pairs), schema={"account_id": pl.String, "team": pl.String}, orient="row")


def untagged_by_account(untagged: pl.DataFrame | pl.LazyFrame, tagging: TaggingConfig) -> pl.DataFrame:
    """month × account × reason: the quarantined spend, with the team its account belongs to (if any).
    Streamed from a lazy ``untagged``: a year's quarantined lines are tens of millions, summed per day
    before their month is formatted (a month per line was half of the 2 s for a year's 19 M)."""
    rows = (
        untagged.lazy().group_by("date", "account_id", "reason", "currency").agg(pl.col("amount").sum(), pl.len().alias("lines"))
        .with_columns(month=month_of())
        .group_by("month", "account_id", "reason", "currency")
        .agg(pl.col("amount").sum(), pl.col("lines").sum())
        .join(account_teams(tagging).lazy(), on="account_id", how="left")
        .sort("month", "currency", "amount", "account_id", "reason", descending=[False, False, True, False, False])
        .collect(engine="streaming")
    )
    return with_cents(rows, "amount", ["month", "currency"])
