"""Allocation drivers: each turns a day's usage into the share of a shared pool each recipient pays.

A driver returns a frame of recipients (team, project, workload_type, environment, weight) whose
weights are non-negative, or ``None`` when it has no usage for the day (the pool then stays
unattributed with a reason). Money is never touched here: ``lib/pools.py`` splits the pool's exact
cost by these weights.
"""

import polars as pl

RECIPIENT_SCHEMA = {
    "team": pl.String(),
    "project": pl.String(),
    "workload_type": pl.String(),
    "environment": pl.String(),
    "weight": pl.Float64(),
}
UNKNOWN = "unknown"
IDLE_PROJECT = "__idle__"


def recipients(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RECIPIENT_SCHEMA).filter(pl.col("weight") > 0)
