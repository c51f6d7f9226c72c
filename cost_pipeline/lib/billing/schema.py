"""The normalized ``cost_lines`` table: FOCUS-aligned names, one row per charge.

Column names follow FOCUS 1.x in snake case (BilledCost → billed_cost, ChargeCategory →
charge_category, SubAccountId → sub_account_id ...) so the lake reads naturally next to any
FOCUS export. Raw provider tags are kept as a map; canonical tags are derived later by compliance.
"""

from __future__ import annotations

import polars as pl

from cost_pipeline.lib.money import MONEY

UTC_TS = pl.Datetime("us", "UTC")
MAP_ENTRIES = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))  # a tag map before it becomes a Map

COST_LINES_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "provider": pl.String(),
    "source": pl.String(),
    "billing_period": pl.String(),  # the period (invoice month) whose current delivery holds the line
    "billing_account_id": pl.String(),
    "sub_account_id": pl.String(),
    "line_item_id": pl.String(),
    "charge_type": pl.String(),
    "charge_category": pl.String(),
    "charge_period_start": UTC_TS,
    "charge_period_end": UTC_TS,
    "service": pl.String(),
    "usage_type": pl.String(),
    "region": pl.String(),
    "resource_id": pl.String(),
    "usage_quantity": pl.Float64(),
    "list_cost": MONEY,
    "billed_cost": MONEY,
    "effective_cost": MONEY,
    "currency": pl.String(),
    "invoice_id": pl.String(),
    "is_final": pl.Boolean(),
    "tags": pl.Map(pl.String(), pl.String()),
    "source_file": pl.String(),
}


# each line's tag-set hashes, when a reader computed them without decoding the maps (``map_hashes.py``)
HASHES = ["tag_set", "_check"]


def conform(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Select and order the contract's columns with their exact types (the period is set by the reader
    flow), and the tag-set hashes if the reader computed them."""
    hashes = [c for c in HASHES if c in frame.collect_schema()]
    return frame.select(
        *(pl.lit(None, dtype).alias(name) if name == "billing_period" else pl.col(name).cast(dtype) for name, dtype in COST_LINES_SCHEMA.items()),
        *hashes,
    )


def empty_cost_lines() -> pl.DataFrame:
    return pl.DataFrame(schema=COST_LINES_SCHEMA)
