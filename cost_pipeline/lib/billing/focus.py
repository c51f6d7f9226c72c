"""FOCUS 1.0–1.2 exports (CSV, CSV.gz or Parquet) from any provider.

FOCUS already defines billed and effective cost, so no amortization is applied here: a line's
effective cost is its ``EffectiveCost``. Note that some real FOCUS exports leave ``EffectiveCost``
at 0 on most rows (the FOCUS-Sample-Data 1.0 AWS rows do); we keep what the file says.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from cost_pipeline.lib.billing.columns import (
    LINE,
    MAP_DTYPE,
    fold_column,
    in_days,
    joined_tags,
    json_tags,
    parse_money,
    parse_timestamps,
    scan_export,
    select_columns,
    tag_lookup,
    text_money,
    text_timestamps,
    utc_timestamps,
    with_line_numbers,
)
from cost_pipeline.lib.billing.map_hashes import ROW, hashed_tags
from cost_pipeline.lib.billing.schema import MAP_ENTRIES, conform, empty_cost_lines
from cost_pipeline.lib.billing.spill import BAD, blank_lines, checked_copy
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.money import MONEY

COLUMNS = {
    "BillingAccountId": "billing_account_id",
    "SubAccountId": "sub_account_id",
    "ChargeCategory": "charge_category",
    "ChargeClass": "charge_class",
    "ChargePeriodStart": "charge_period_start",
    "ChargePeriodEnd": "charge_period_end",
    "ServiceName": "service",
    "SkuId": "usage_type",
    "RegionId": "region",
    "ResourceId": "resource_id",
    "ConsumedQuantity": "usage_quantity",
    "ListCost": "list_cost",
    "BilledCost": "billed_cost",
    "EffectiveCost": "effective_cost",
    "BillingCurrency": "currency",
    "InvoiceId": "invoice_id",
    "ProviderName": "provider",
    "Tags": "tags",
}
NULLS = ["NULL", "null", ""]
REQUIRED = ["BilledCost", "EffectiveCost", "BillingCurrency", "ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory"]


def read_focus_file(path: Path, where: str, name: str, source) -> pl.DataFrame:
    """One FOCUS file as cost_lines (all days). Bad headers or values name the file and row.

    The source's ``currency`` stands in for a missing ``BillingCurrency`` column (the FOCUS spec's
    own examples omit it); it never overrides a currency the file gives. Line ids are content
    hashes, given by the reader flow (FOCUS has no line id).
    """
    default_currency = source.currency
    try:
        if path.name.lower().endswith(".parquet"):
            raw = pl.read_parquet(path)
        else:
            raw = pl.read_csv(path, infer_schema=False, null_values=NULLS, encoding="utf8-lossy")
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file, reported by name
        raise InputError(where, f"cannot read FOCUS file: {exc}") from None
    raw = with_line_numbers(raw)
    if raw.is_empty():
        return empty_cost_lines()
    required = [c for c in REQUIRED if not (default_currency and c == "BillingCurrency")]
    frame = select_columns(raw, COLUMNS, required, where)
    if default_currency:
        frame = frame.with_columns(pl.col("currency").fill_null(default_currency))
    frame = parse_money(frame, ["list_cost", "billed_cost", "effective_cost"], where)
    frame = parse_timestamps(frame, ["charge_period_start", "charge_period_end"], where)
    if frame.schema["tags"] == pl.String:
        frame = json_tags(frame, "tags", where)
    missing_currency = frame.filter(pl.col("currency").is_null())
    if missing_currency.height:
        row = int(missing_currency[LINE][0])
        raise InputError(where, f"row {row}: BillingCurrency is empty ({missing_currency.height} line(s) in all)")
    return _normalized(frame, source, name)


def scan_focus_file(path: Path, where: str, name: str, source, days: list[dt.date] | None = None,
                    maps: list[pl.DataFrame] | None = None) -> pl.LazyFrame | None:
    """A FOCUS file as cost_lines, lazily: only the mapped columns, never the whole file in memory.
    Parquet typed as FOCUS defines it (amounts as numbers, charge periods as timestamps, ``Tags`` as a
    map) with only the ``days``' row groups; CSV (and CSV.gz) parsed once into a local Parquet copy
    (``lib/billing/spill.py``) by a streaming pass that also finds every amount and timestamp parsing
    and every line with a start and a currency (its distinct ``Tags`` texts, few, are parsed once and
    joined back). None for any other file (a Parquet file with text amounts, a bad value), which
    :func:`read_focus_file` then reads whole, naming the row. Read whole, 10 M lines took 29-32 s at
    8.7-9.0 GiB as Parquet, 51-59 s at 11.9-12.0 GiB as CSV.gz; line ids are added by the reader flow
    (``lib/billing/sources.py``). A line without a charge period start in a Parquet file fails the
    reader flow naming its record (the whole read drops lines that are entirely empty). ``maps``: as
    :func:`lib.billing.cur2.scan_cur2_file`'s, for a Parquet ``Tags`` map (hashed from its dictionary
    pages: a 10 M-line day's maps took Polars ~4 s on one core to decode), and for a text file's ``Tags``
    texts (hashed once per distinct text, :func:`columns.joined_tags`)."""
    parquet = path.name.lower().endswith(".parquet")
    if (export := scan_export(path, NULLS)) is None:
        return None
    raw, schema, by_fold = export
    found = {target: by_fold.get(fold_column(doc)) for doc, target in COLUMNS.items()}
    required = [COLUMNS[c] for c in REQUIRED if not (source.currency and c == "BillingCurrency")]
    money, times = ("list_cost", "billed_cost", "effective_cost"), ("charge_period_start", "charge_period_end")
    typed = all(found[c] for c in required) and (not parquet or (
        all(schema[found[c]].is_numeric() for c in money if found[c])
        and all(isinstance(schema[found[c]], pl.Datetime) for c in times)
        and (not found["tags"] or schema[found["tags"]] in (pl.Map(pl.String, pl.String), pl.Null))))
    if not typed:
        return None
    no_tags = pl.lit([], dtype=MAP_ENTRIES).cast(MAP_DTYPE)  # as read whole: no Tags column, no tags

    def column(target: str) -> pl.Expr:
        doc = found[target]
        if not doc:
            return (no_tags if target == "tags" else pl.lit(None, pl.String)).alias(target)
        if target in money:
            return (pl.col(doc).cast(MONEY) if parquet else text_money(doc)).alias(target)
        if target in times:
            return (utc_timestamps(doc, schema[doc]) if parquet else text_timestamps(doc)).alias(target)
        return pl.col(doc).alias(target)

    currency = pl.col(found["currency"]) if found["currency"] else pl.lit(None, pl.String)
    if source.currency:
        currency = currency.fill_null(source.currency)
    if parquet:
        hashed = _hashed(path, found, schema, days) if maps is not None else None
        if hashed:
            raw = pl.scan_parquet(path, row_index_name=ROW)
        if days:  # on the raw column, where the row groups' statistics apply
            raw = raw.filter(in_days(column("charge_period_start"), days))
        kept = [t for t in found if t != "currency" and not (hashed and t == "tags")]
        lines = raw.select(*(column(t) for t in kept), currency.alias("currency"), *([ROW] if hashed else []))
        if hashed:
            maps.append(hashed.maps)
            tag_set, check = hashed.at(pl.col(ROW))
            lines = lines.with_columns(tag_set=tag_set, _check=check, tags=pl.lit(None, MAP_DTYPE))
        return _normalized(lines, source, name)
    bad = [pl.col(found[t]).is_not_null() & column(t).is_null() for t in (*money, *times) if found[t]]
    blank, blanks = blank_lines(raw, [doc for doc in found.values() if doc])
    parsed = raw.select(
        *(column(t) for t in found if t not in ("currency", "tags")), currency.alias("currency"),
        (pl.col(found["tags"]) if found["tags"] else pl.lit(None, pl.String)).alias("tags"),
        pl.any_horizontal(*bad, pl.col(found["charge_period_start"]).is_null(), currency.is_null()).alias(BAD), blank)
    copy = checked_copy(path, parsed, f"focus|{source.currency or ''}", blanks, distinct="tags", lookup=lambda texts: tag_lookup(texts, "tags", where))
    if copy is None:
        return None
    frame, tags = copy
    if days:
        frame = frame.filter(in_days(pl.col("charge_period_start"), days))
    # each distinct Tags text parsed once, joined back (named as a whole read names it)
    return _normalized(joined_tags(frame, tags, "_tags", maps), source, name)


def _hashed(path: Path, found: dict, schema: pl.Schema, days: list[dt.date] | None):
    """The tag-set hashes of a Parquet file's ``Tags`` map (None without one: see :func:`hashed_tags`)."""
    if not found["tags"] or not isinstance(schema[found["tags"]], pl.Map):
        return None
    return hashed_tags(path, found["tags"], found["charge_period_start"], days)


def _normalized(frame, source, name: str):
    """FOCUS columns (renamed, typed) as cost_lines: a frame, or a lazy one."""
    return conform(
        frame.with_columns(
            date=pl.col("charge_period_start").dt.date(),
            provider=pl.col("provider").fill_null("unknown").str.to_lowercase(),
            source=pl.lit(source.name),
            line_item_id=pl.lit(None, pl.String),
            charge_type=pl.col("charge_category"),
            usage_quantity=pl.col("usage_quantity").cast(pl.Float64, strict=False),
            is_final=pl.col("invoice_id").fill_null("").str.len_chars() > 0,
            source_file=pl.lit(name),
            billing_account_id=pl.col("billing_account_id").fill_null("unknown"),
        )
    )
