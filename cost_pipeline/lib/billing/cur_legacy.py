"""Legacy AWS Cost and Usage Reports files (CSV, CSV.gz or Parquet) as cost lines.

Which assembly is current is decided by the period's manifest (``lib/billing/deliveries.py``).
Headers are matched in either spelling (``lineItem/UnblendedCost`` or ``line_item_unblended_cost``);
tags come from ``resourceTags/<key>`` or ``resource_tags_<key>``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from cost_pipeline.lib.billing.amortize import AMORTIZATION_COLUMNS
from cost_pipeline.lib.billing.columns import (
    LINE,
    fold_column,
    parse_money,
    parse_timestamps,
    select_columns,
    utc_timestamps,
    with_line_numbers,
)
from cost_pipeline.lib.billing.cur2 import normalize_cur2
from cost_pipeline.lib.billing.schema import empty_cost_lines
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.money import MONEY

REQUIRED = [
    "identity_line_item_id",
    "line_item_usage_account_id",
    "line_item_line_item_type",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_product_code",
    "line_item_currency_code",
    "line_item_unblended_cost",
]
OPTIONAL = [
    "bill_invoice_id",
    "bill_payer_account_id",
    "line_item_usage_type",
    "line_item_resource_id",
    "line_item_usage_amount",
    "pricing_public_on_demand_cost",
    *AMORTIZATION_COLUMNS,
]
REGION_SPELLINGS = ["product_region_code", "product_region"]
MONEY_COLUMNS = ["line_item_unblended_cost", "pricing_public_on_demand_cost", *[c for c in AMORTIZATION_COLUMNS if c != "reservation_reservation_a_r_n"]]
TAG_PREFIXES = ("resourcetags/", "resource_tags_")
_ENTRIES = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))


def _read_raw(path: Path, where: str) -> pl.DataFrame:
    try:
        if path.name.lower().endswith(".parquet"):
            return pl.read_parquet(path)
        return pl.read_csv(path, infer_schema=False, null_values=[""], encoding="utf8-lossy")
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file, reported by name
        raise InputError(where, f"cannot read CUR file: {exc}") from None


def _tags(columns: list[str]) -> pl.Expr:
    """One map of the line's non-empty ``resourceTags/<key>`` (or ``resource_tags_<key>``) columns."""
    tag_columns = {c: c[len(p):] for c in columns for p in TAG_PREFIXES if c.lower().startswith(p)}
    entries = [pl.struct(key=pl.lit(k), value=pl.col(c).cast(pl.String)) for c, k in tag_columns.items()]
    tags = (
        pl.concat_list(entries).list.eval(pl.element().filter(pl.element().struct.field("value").str.len_chars() > 0))
        if entries else pl.lit([], dtype=_ENTRIES)
    )
    return tags.cast(_ENTRIES).cast(pl.Map(pl.String, pl.String))


def legacy_to_cur2(raw: pl.DataFrame, where: str) -> pl.DataFrame:
    """Legacy CUR columns renamed to their CUR 2.0 names, typed, with tags as a map."""
    folded = {fold_column(c) for c in raw.columns}
    region = next((c for c in REGION_SPELLINGS if fold_column(c) in folded), REGION_SPELLINGS[0])
    wanted = {c: c for c in REQUIRED + OPTIONAL} | {region: "product_region_code"}
    with_tags = raw.with_columns(_tags(raw.columns).alias("__tags__"))
    frame = select_columns(with_tags, wanted | {"__tags__": "resource_tags"}, REQUIRED, where)
    frame = parse_money(frame, MONEY_COLUMNS, where)
    frame = parse_timestamps(frame, ["line_item_usage_start_date", "line_item_usage_end_date"], where)
    return frame.with_columns(
        pl.col("line_item_usage_amount").cast(pl.Float64, strict=False),
        pl.col("bill_invoice_id").cast(pl.String),
        pl.col("reservation_reservation_a_r_n").cast(pl.String),
    )


def read_legacy_file(path: Path, where: str, name: str, source) -> pl.DataFrame:
    header_rows = 0 if path.name.lower().endswith(".parquet") else 1
    raw = with_line_numbers(_read_raw(path, where), header_rows)
    if raw.is_empty():
        return empty_cost_lines()
    typed = legacy_to_cur2(raw, where)
    lines = normalize_cur2(typed.lazy(), source.name, name).collect()
    missing = lines.with_columns(typed[LINE]).filter(pl.col("effective_cost").is_null() | pl.col("currency").is_null())
    if missing.height:
        row = missing.row(0, named=True)
        raise InputError(where, f"row {row[LINE]}: no amount or currency for a {row['charge_type']} line (its amortization columns are missing or empty)")
    return lines


def scan_legacy_parquet(path: Path, where: str, name: str, source, days: list[dt.date] | None = None) -> pl.LazyFrame | None:
    """A legacy CUR Parquet file (the Athena-ready delivery: ``line_item_unblended_cost`` as a number,
    usage dates as timestamps, a ``resource_tags_<key>`` text column per tag) as cost lines, lazily:
    only the mapped columns (a legacy CUR file has a column per product attribute, hundreds of them),
    only ``days`` when given (row groups of other days are skipped by their statistics). None for any
    other file, which :func:`read_legacy_file` then reads whole, naming what is wrong with it. A line
    without an amount fails the reader flow naming the file and line (``lib/billing/sources.py``)."""
    if not path.name.lower().endswith(".parquet"):
        return None
    try:
        schema = pl.scan_parquet(path).collect_schema()
    except Exception:  # noqa: BLE001 - read whole, for the error naming the file
        return None
    by_fold: dict[str, str] = {}
    for column in schema:
        by_fold.setdefault(fold_column(column), column)
    region = next((c for c in REGION_SPELLINGS if fold_column(c) in by_fold), REGION_SPELLINGS[0])
    found = {target: by_fold.get(fold_column(doc)) for doc, target in ({c: c for c in REQUIRED + OPTIONAL} | {region: "product_region_code"}).items()}
    tag_columns = [c for c in schema if c.lower().startswith(TAG_PREFIXES)]
    times = ("line_item_usage_start_date", "line_item_usage_end_date")
    typed = (
        all(found[c] for c in REQUIRED)
        and all(schema[found[c]].is_numeric() or schema[found[c]] == pl.Null for c in MONEY_COLUMNS if found[c])
        and all(isinstance(schema[found[c]], pl.Datetime) for c in times)
        and (not found["line_item_usage_amount"] or schema[found["line_item_usage_amount"]].is_numeric())
        and all(schema[c] in (pl.String, pl.Null) for c in tag_columns)
    )
    if not typed:
        return None

    def column(target: str) -> pl.Expr:
        kind = MONEY if target in MONEY_COLUMNS else pl.Float64 if target == "line_item_usage_amount" else pl.String
        if not found[target]:
            return pl.lit(None, kind).alias(target)
        if target in times:
            return utc_timestamps(found[target], schema[found[target]]).alias(target)
        return pl.col(found[target]).cast(kind).alias(target)

    frame = pl.scan_parquet(path)
    if days:  # on the raw column, where the row groups' statistics apply
        start = dt.datetime.combine(min(days), dt.time(), tzinfo=dt.UTC)
        end = dt.datetime.combine(max(days) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        usage_start = utc_timestamps(found[times[0]], schema[found[times[0]]])
        frame = frame.filter((usage_start >= start) & (usage_start < end))
    return normalize_cur2(frame.select(*(column(t) for t in found), _tags(tag_columns).alias("resource_tags")), source.name, name)
