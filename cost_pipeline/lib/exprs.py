"""Polars expressions that keep a day's plan on the streaming engine.

``replace_strict`` with a mapping is not streamed by Polars 2.1: a plan using it is run in memory,
whole (measured on a 13 M-line CUR day: 6.2 GiB peak for the ingest sink instead of under 1 GiB).
A mapping lookup written as one ``is_in`` per distinct result streams like any element-wise
expression.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl


def lookup(expr: pl.Expr, mapping: Mapping[str, str], default: str | None = None) -> pl.Expr:
    """``mapping[value]`` for each value, ``default`` for values not in the mapping (and for nulls)."""
    by_result: dict[str, list[str]] = {}
    for key, result in mapping.items():
        by_result.setdefault(result, []).append(key)
    if not by_result:
        return pl.lit(default, dtype=pl.String)
    chain = None
    for result, keys in by_result.items():
        chain = (pl.when if chain is None else chain.when)(expr.is_in(keys)).then(pl.lit(result, dtype=pl.String))
    return chain.otherwise(pl.lit(default, dtype=pl.String))
