"""Allocation drivers: each turns a day's usage into the share of a shared pool each recipient pays.

A driver returns a frame of recipients (team, project, workload_type, environment, weight) whose
weights are non-negative, or ``None`` when it has no usage for the day (the pool then stays
unattributed with a reason). Money is never touched here: ``lib/pools.py`` splits the pool's exact
cost by these weights.
"""

import polars as pl

from cost_pipeline.config import TaggingConfig

RECIPIENT_SCHEMA = {
    "team": pl.String(),
    "project": pl.String(),
    "workload_type": pl.String(),
    "environment": pl.String(),
    "weight": pl.Float64(),
    "reason": pl.String(),  # why a recipient is ``unknown``, when a driver knows (e.g. conflicting labels)
}
UNKNOWN = "unknown"
IDLE_PROJECT = "__idle__"


def recipients(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{"reason": None, **r} for r in rows], schema=RECIPIENT_SCHEMA).filter(pl.col("weight") > 0)


SAFE_TEAM = r"^[a-z0-9][a-z0-9-]{0,62}$"
DIMENSIONS = ["project", "workload_type", "environment"]


def validated(shares: pl.DataFrame, schema: TaggingConfig) -> pl.DataFrame:
    """Usage labels are untrusted input, like tags: trimmed and lower-cased, then checked against the
    team registry (or the safe team pattern without one) and the schema's allowed values and patterns.
    A team label that fails goes to ``unknown`` with a reason (``missing_team_label``,
    ``unknown_team_label``), never to a new team; another dimension that fails becomes empty.
    The owner's ``__idle__`` line is the pool's own and is kept as is."""
    clean = lambda c: pl.col(c).str.strip_chars().str.to_lowercase()  # noqa: E731
    team = clean("team")
    known = team.is_in(list(schema.teams)) if schema.teams else team.str.contains(SAFE_TEAM) & (team != UNKNOWN)
    dims = {}
    for dim in DIMENSIONS:
        key = next((k for k in schema.keys if k.column == dim), None)
        ok = pl.lit(True)
        if key is not None and key.allowed is not None:
            ok = ok & clean(dim).is_in(key.allowed)
        if key is not None and key.pattern is not None:
            ok = ok & clean(dim).str.contains(f"^(?:{key.pattern})$")
        dims[dim] = pl.when(ok.fill_null(False)).then(clean(dim))
    idle = pl.col("project") == IDLE_PROJECT
    out = shares.with_columns(
        reason=pl.when(idle).then(None).when(pl.col("reason").is_not_null()).then(pl.col("reason"))
        .when(pl.col("team").is_null() | (team == UNKNOWN)).then(pl.lit("missing_team_label"))
        .when(~known.fill_null(False)).then(pl.lit("unknown_team_label")),
    ).with_columns(
        team=pl.when(idle).then(pl.col("team")).when(pl.col("reason").is_null()).then(team).otherwise(pl.lit(UNKNOWN)),
        **{d: pl.when(idle).then(pl.col(d)).otherwise(e) for d, e in dims.items()},
    )
    # weights folded into one recipient are added in the drivers' (fixed) order, and recipients come
    # out sorted: a rerun gives the same weights to the last bit, in the same order
    keys = ["team", *DIMENSIONS, "reason"]
    return out.group_by(keys, maintain_order=True).agg(pl.col("weight").sum()).sort(keys, nulls_last=True)
