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
    in_days,
    join_on_values,
    parse_money,
    parse_timestamps,
    scan_export,
    select_columns,
    text_money,
    text_timestamps,
    utc_timestamps,
    with_line_numbers,
)
from cost_pipeline.lib.billing.cur2 import normalize_cur2
from cost_pipeline.lib.billing.fingerprint import tag_set_hash
from cost_pipeline.lib.billing.schema import empty_cost_lines
from cost_pipeline.lib.billing.spill import BAD, blank_lines, checked_copy
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
    """One map of the line's non-empty ``resourceTags/<key>`` (or ``resource_tags_<key>``) columns.
    The values as a fixed-width array, then paired with the keys: a list of structs concatenated per
    line took 6 s a million lines (six tag columns), this 0.4 s."""
    tag_columns = {c: c[len(p):] for c in columns for p in TAG_PREFIXES if c.lower().startswith(p)}
    if not tag_columns:
        return pl.lit([], dtype=_ENTRIES).cast(pl.Map(pl.String, pl.String))
    values = pl.concat_arr([pl.col(c).cast(pl.String) for c in tag_columns]).arr.to_list()
    entries = values.list.eval(pl.struct(key=pl.lit(pl.Series(list(tag_columns.values()), dtype=pl.String)), value=pl.element())
                               .filter(pl.element().str.len_chars() > 0))
    return entries.cast(_ENTRIES).cast(pl.Map(pl.String, pl.String))


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


def scan_legacy_file(path: Path, where: str, name: str, source, days: list[dt.date] | None = None,
                     maps: list[pl.DataFrame] | None = None) -> pl.LazyFrame | None:
    """A legacy CUR file as cost lines, lazily: only the mapped columns (a legacy CUR file has a column
    per product attribute, hundreds of them), never the whole file in memory. Parquet (the Athena-ready
    delivery: amounts as numbers, usage dates as timestamps, a ``resource_tags_<key>`` text column per
    tag) with the asked ``days``' row groups only; CSV (and CSV.gz) parsed once into a local Parquet copy
    (``lib/billing/spill.py``) by a streaming pass that also finds every amount and timestamp parsing
    and every line with a usage start. None for any other file (a Parquet file with text amounts, a bad
    value, a missing column), which :func:`read_legacy_file` then reads whole, naming the file, row and
    value. Read whole, 10 M lines took 15.4 GiB as Parquet and more than 16 GiB as CSV.gz. ``maps``: the
    caller wants tag-set hashes instead of maps (:func:`_hashed_tags`); the copy keeps the tag columns."""
    parquet = path.name.lower().endswith(".parquet")
    if (export := scan_export(path, [""])) is None:
        return None
    raw, schema, by_fold = export
    region = next((c for c in REGION_SPELLINGS if fold_column(c) in by_fold), REGION_SPELLINGS[0])
    found = {target: by_fold.get(fold_column(doc)) for doc, target in ({c: c for c in REQUIRED + OPTIONAL} | {region: "product_region_code"}).items()}
    tag_columns = [c for c in schema if c.lower().startswith(TAG_PREFIXES)]
    times = ("line_item_usage_start_date", "line_item_usage_end_date")
    typed = all(found[c] for c in REQUIRED) and (not parquet or (
        all(schema[found[c]].is_numeric() or schema[found[c]] == pl.Null for c in MONEY_COLUMNS if found[c])
        and all(isinstance(schema[found[c]], pl.Datetime) for c in times)
        and (not found["line_item_usage_amount"] or schema[found["line_item_usage_amount"]].is_numeric())
        and all(schema[c] in (pl.String, pl.Null) for c in tag_columns)))
    if not typed:
        return None

    def column(target: str) -> pl.Expr:
        kind = MONEY if target in MONEY_COLUMNS else pl.Float64 if target == "line_item_usage_amount" else pl.String
        doc = found[target]
        if not doc:
            return pl.lit(None, kind).alias(target)
        if target in times:
            return (utc_timestamps(doc, schema[doc]) if parquet else text_timestamps(doc)).alias(target)
        if target in MONEY_COLUMNS and not parquet:
            return text_money(doc).alias(target)
        return pl.col(doc).cast(kind, strict=parquet).alias(target)

    if parquet:
        if days:  # on the raw column, where the row groups' statistics apply
            raw = raw.filter(in_days(column(times[0]), days))
        frame = raw.select(*(column(t) for t in found), *tag_columns)
    else:
        bad = [pl.col(doc).is_not_null() & column(t).is_null() for t, doc in found.items() if doc and (t in MONEY_COLUMNS or t in times)]
        blank, blanks = blank_lines(raw, [*(doc for doc in found.values() if doc), *tag_columns])
        parsed = raw.select(*(column(t) for t in found), *tag_columns, pl.any_horizontal(*bad, pl.col(found[times[0]]).is_null()).alias(BAD), blank)
        copy = checked_copy(path, parsed, "aws_cur_legacy", blanks)
        if copy is None:
            return None
        frame = copy[0].filter(in_days(pl.col(times[0]), days)) if days else copy[0]
    if maps is not None and tag_columns:
        frame = _hashed_tags(frame, tag_columns, where, maps)
    else:
        frame = frame.with_columns(_tags(tag_columns).alias("resource_tags")).drop(tag_columns)
    return normalize_cur2(frame, source.name, name)


def _hashed_tags(lines: pl.LazyFrame, tag_columns: list[str], where: str, maps: list[pl.DataFrame]) -> pl.LazyFrame:
    """``lines`` with their tag-set hashes (:data:`schema.HASHES`) instead of their tag columns, the
    maps left null and appended to ``maps``: each distinct combination of tag values (found by a pass
    over the tag columns alone) is made a map and hashed once, then joined back on the values. A map
    made and hashed per line was a quarter of a 10 M-line Parquet day's ingest (14.9 s at 0.90 GiB, now
    11.1-12.1 s at 0.57 GiB: 69,831 combinations); a CSV.gz day went from 55.3 to 48.1 s."""
    try:
        combos = lines.select(tag_columns).unique().collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise InputError(where, f"cannot read CUR file: {str(exc).splitlines()[0]}") from None
    combos = combos.with_columns(_tags(tag_columns).alias("tags")).with_columns(tag_set=tag_set_hash(), _check=tag_set_hash(seed=2))
    maps.append(combos.select("tag_set", pl.col("_check").alias("check"), "tags"))
    joined = join_on_values(lines, combos.select(*tag_columns, "tag_set", "_check"), tag_columns)
    return joined.drop(tag_columns).with_columns(resource_tags=pl.lit(None, pl.Map(pl.String, pl.String)))
