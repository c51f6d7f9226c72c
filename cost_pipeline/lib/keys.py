"""Tag key folding: one rule for every provider's spelling of a key, used by the schema and the config."""

from __future__ import annotations

import re

import polars as pl

_PREFIXES = ("resourcetags/user:", "resource_tags_user_", "resourcetags/", "tags/", "user:", "user_")


def fold_key(raw: str) -> str:
    """Fold a provider's tag key to the schema's form: lower case, prefix dropped, ``_``/``:`` → ``-``."""
    key = raw.strip().lower()
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return re.sub(r"[_:\s]+", "-", key)


def fold_key_expr(expr: pl.Expr) -> pl.Expr:
    """:func:`fold_key` as a Polars expression (same prefixes, in the same order)."""
    prefixes = "|".join(re.escape(p) for p in _PREFIXES)
    key = expr.str.strip_chars().str.to_lowercase().str.replace(f"^(?:{prefixes})", "")
    return key.str.replace_all(r"[_:\s]+", "-")
