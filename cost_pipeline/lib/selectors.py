"""Matching cost lines by account, service and resource-id prefix (virtual tags and pools share it)."""

from __future__ import annotations

import polars as pl


def line_condition(
    account_ids: list[str] | None = None,
    services: list[str] | None = None,
    resource_prefixes: list[str] | None = None,
) -> pl.Expr:
    """All the given conditions at once; a condition left out always holds."""
    cond = pl.lit(True)
    if account_ids:
        cond &= pl.col("sub_account_id").is_in(account_ids)
    if services:
        cond &= pl.col("service").is_in(services)
    if resource_prefixes:
        resource = pl.col("resource_id").fill_null("")
        cond &= pl.any_horizontal([resource.str.starts_with(p) for p in resource_prefixes])
    return cond
