"""Drivers that need no cluster model: a per-tenant metric, fixed percentages, or an even split.

``metric``: a tenant's share is the integral over the day of its series (query_range steps are
uniform, so the sum of samples), e.g. Mimir active series per tenant for the monitoring stack,
feature-store requests per team, S3 bytes stored per prefix for the data lake. The tenant label's
value is translated by ``label_map`` (tenant id or prefix → team); a value that maps to no known
team is ``unknown``, never guessed.
"""

from __future__ import annotations

import polars as pl

from cost_pipeline.config import EvenDriver, FixedDriver, MetricDriver
from cost_pipeline.lib.drivers import UNKNOWN, recipients
from cost_pipeline.lib.usage import Usage, query_series


def metric_shares(samples: "pl.DataFrame | Usage", driver: MetricDriver) -> pl.DataFrame | None:
    series = query_series(samples, driver.query, [driver.label])
    if series.is_empty():
        return None
    # every float sum over rows in one order (samples by tenant, series and time; tenants by name), so a
    # rerun gives the same weights to the last bit: a group-by's groups come in any order
    per_tenant = (
        series.select(pl.col(driver.label).alias("tenant"), "series", "timestamp", pl.col("value").clip(lower_bound=0))
        .sort("tenant", "series", "timestamp", nulls_last=True)
        .group_by("tenant", maintain_order=True).agg(pl.col("value").sum())
    )
    rows: dict[str, float] = {}
    for tenant, value in per_tenant.iter_rows():
        team = driver.label_map.get(tenant, tenant) if tenant is not None else UNKNOWN
        rows[team] = rows.get(team, 0.0) + value  # validated against the registry in lib/pools
    if sum(rows.values()) <= 0:
        return None
    return recipients([{"team": t, "project": None, "workload_type": None, "environment": None, "weight": rows[t]} for t in sorted(rows)])


def fixed_shares(driver: FixedDriver) -> pl.DataFrame:
    return recipients(
        [{"team": t, "project": None, "workload_type": None, "environment": None, "weight": p} for t, p in driver.shares.items()]
    )


def even_shares(_driver: EvenDriver, active_teams: list[str]) -> pl.DataFrame | None:
    if not active_teams:
        return None
    return recipients(
        [{"team": t, "project": None, "workload_type": None, "environment": None, "weight": 1.0} for t in sorted(active_teams)]
    )
