"""The tagging schema applied to cost lines: canonical tags and one reason per failing line.

Providers spell the same tag many ways (``ml-team``, ``user:ml-team``, CUR 2.0's ``user_ml_team``,
legacy CUR's ``resourceTags/user:ml-team``, ``ML_Team``). Keys are matched after an explicit,
documented folding (see :func:`fold_key`); values are trimmed and lower-cased, nothing more. A value
that is still not allowed is invalid: we never guess which team a typo meant.
"""

from __future__ import annotations

import re

import polars as pl

from cost_pipeline.config import TaggingConfig

_PREFIXES = ("resourcetags/user:", "resource_tags_user_", "resourcetags/", "tags/", "user:", "user_")
SAFE_TEAM = r"[a-z0-9][a-z0-9-]{0,62}"
TAG_COLUMNS_REASON = "tag_reason"


def fold_key(raw: str) -> str:
    """Fold a provider's tag key to the schema's form: lower case, prefix dropped, ``_``/``:`` → ``-``."""
    key = raw.strip().lower()
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return re.sub(r"[_:\s]+", "-", key)


def key_aliases(raw_keys: list[str], schema: TaggingConfig) -> dict[str, list[str]]:
    """For each schema key, the raw keys present in the data that mean it (exact spelling first)."""
    wanted = {fold_key(k.key): k.key for k in schema.keys}
    aliases: dict[str, list[str]] = {k.key: [] for k in schema.keys}
    for raw in sorted(raw_keys, key=lambda r: (r not in aliases, r)):
        canonical = wanted.get(fold_key(raw))
        if canonical is not None:
            aliases[canonical].append(raw)
    return aliases


def _fullmatch(expr: pl.Expr, pattern: str) -> pl.Expr:
    return expr.str.contains(f"^(?:{pattern})$")


def apply_tag_schema(lines: pl.DataFrame, schema: TaggingConfig) -> pl.DataFrame:
    """Add one column per schema key (canonical values) and ``tag_reason`` (null when compliant).

    The reason is the first failure in schema order: ``missing:<key>``, ``invalid:<key>``, or
    ``unknown_team`` for a team value that is not in the team registry.
    """
    raw_keys = (
        lines.select(pl.col("tags").map.keys().explode().drop_nulls().unique()).to_series().to_list()
        if lines.height
        else []
    )
    aliases = key_aliases(raw_keys, schema)
    values = {}
    for key in schema.keys:
        getters = [pl.col("tags").map.get(raw) for raw in aliases[key.key]]
        value = pl.coalesce(getters) if getters else pl.lit(None, dtype=pl.String)
        value = value.str.strip_chars().str.to_lowercase()
        values[key.key] = pl.when(value.str.len_chars() > 0).then(value)
    with_values = lines.with_columns(**{k.column: values[k.key] for k in schema.keys})

    checks = []
    for key in schema.keys:
        col = pl.col(key.column)
        required = pl.lit(key.required)
        for other, expected in (key.required_when or {}).items():
            other_col = next(k.column for k in schema.keys if k.key == other)
            required = required | (pl.col(other_col) == expected).fill_null(False)
        checks.append(pl.when(col.is_null() & required).then(pl.lit(f"missing:{key.key}")))
        if key.column == "team":
            if schema.teams:
                bad = ~col.is_in(list(schema.teams))
                checks.append(pl.when(col.is_not_null() & bad).then(pl.lit("unknown_team")))
            else:
                checks.append(pl.when(~_fullmatch(col, SAFE_TEAM)).then(pl.lit("invalid:ml-team")))
        if key.allowed is not None:
            checks.append(pl.when(col.is_not_null() & ~col.is_in(key.allowed)).then(pl.lit(f"invalid:{key.key}")))
        if key.pattern is not None:
            checks.append(pl.when(~_fullmatch(col, key.pattern)).then(pl.lit(f"invalid:{key.key}")))
    return with_values.with_columns(pl.coalesce(checks).alias(TAG_COLUMNS_REASON))


def quarantine(tagged: pl.DataFrame) -> pl.DataFrame:
    """The ``untagged_spend`` table: every line that fails the schema, with its reason."""
    return tagged.filter(pl.col(TAG_COLUMNS_REASON).is_not_null()).select(
        "date",
        "line_item_id",
        pl.col(TAG_COLUMNS_REASON).alias("reason"),
        pl.col("effective_cost").alias("amount"),
        "billed_cost",
        "currency",
        "provider",
        "source",
        pl.col("sub_account_id").alias("account_id"),
        "service",
        "resource_id",
        "tags",
    )
