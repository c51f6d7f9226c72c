"""Azure Cost Management cost details exports (EA, MCA and pay-as-you-go; actual or amortized), CSV or Parquet.

The mapping below is data, to be read next to Microsoft's "cost details" field reference: each
cost_lines column lists the header spellings Azure has used over time (EA's ``Cost``, MCA's
``CostInBillingCurrency``, pay-as-you-go's ``PreTaxCost``, camelCase, localized headers such as
``Kategorie der Verbrauchseinheit (MeterCategory)`` whose English name is in parentheses).

Effective cost comes from the **amortized** export (``dataset: amortized``, the default): there,
reservation and savings-plan covered usage carries its amortized cost and unused commitment appears
as ``UnusedReservation`` / ``UnusedSavingsPlan`` lines. The billed (invoice) view of those lines is
0, because the commitment itself is billed by its ``Purchase`` line in the actual-cost export. With
``dataset: actual`` both billed and effective cost are the export's cost.

``Tags`` is a JSON object, or in older exports the object's inside without braces
(``"env": "prod","org": "trey"``); both are read.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import polars as pl

from cost_pipeline.lib.billing.columns import (
    LINE,
    entry_lists,
    fold_column,
    joined_tags,
    parse_money,
    require_values,
    scan_export,
    text_money,
    with_line_numbers,
)
from cost_pipeline.lib.billing.schema import MAP_ENTRIES, conform, empty_cost_lines
from cost_pipeline.lib.billing.spill import BAD, blank_lines, checked_copy, identical_rows
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.exprs import lookup

# cost_lines column -> Azure header spellings, preferred first
COLUMNS: dict[str, list[str]] = {
    "date": ["Date", "UsageDateTime", "UsageDate"],
    "billing_account_id": ["BillingAccountId", "BillingProfileId"],
    "sub_account_id": ["SubscriptionId", "SubscriptionGuid"],
    "service": ["MeterCategory", "ServiceFamily", "ConsumedService"],
    "usage_type": ["MeterName", "MeterId"],
    "region": ["ResourceLocation", "Location", "MeterRegion"],
    "resource_id": ["ResourceId", "InstanceId", "InstanceName"],
    "usage_quantity": ["Quantity", "UsageQuantity"],
    "cost": ["CostInBillingCurrency", "Cost", "PreTaxCost"],
    "list_cost": ["PaygCostInBillingCurrency"],
    "currency": ["BillingCurrency", "BillingCurrencyCode", "Currency"],
    "charge_type": ["ChargeType"],
    "pricing_model": ["PricingModel"],
    "invoice_id": ["InvoiceId"],
    "tags": ["Tags"],
}
REQUIRED = ["date", "cost"]  # and a currency column, unless the source sets ``currency``
COMMITMENT_MODELS = ["reservation", "savingsplan"]
_LOCALIZED = re.compile(r"\(([A-Za-z0-9]+)\)\s*$")


def _english(header: str) -> str:
    """``Kategorie der Verbrauchseinheit (MeterCategory)`` -> ``MeterCategory``."""
    match = _LOCALIZED.search(header)
    return match.group(1) if match else header


def _found(columns: list[str]) -> dict[str, str | None]:
    """cost_lines column -> the file's header for it (any spelling, localized or not), or None."""
    by_fold: dict[str, str] = {}
    for column in columns:
        if column != LINE:
            by_fold.setdefault(fold_column(_english(column)), column)
    return {target: next((by_fold[fold_column(s)] for s in spellings if fold_column(s) in by_fold), None) for target, spellings in COLUMNS.items()}


def _select(raw: pl.DataFrame, where: str, default_currency: str | None) -> pl.DataFrame:
    found = _found(raw.columns)
    required = REQUIRED + ([] if default_currency else ["currency"])
    missing = [f"{t} ({' or '.join(COLUMNS[t])})" for t in required if found[t] is None]
    if missing:
        raise InputError(where, f"missing required Azure cost export column(s): {'; '.join(missing)}")
    return raw.select(
        [pl.col(c).cast(pl.String).alias(t) if c else pl.lit(None, pl.String).alias(t) for t, c in found.items()] + [pl.col(LINE)]
    )


def _parse_tags(text: str | None, where: str) -> list[dict]:
    if text is None or not text.strip():
        return []
    body = text.strip()
    if not body.startswith("{"):
        body = "{" + body + "}"  # historical form without braces
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InputError(where, f"column Tags: not a JSON object: {text[:60]!r} ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(where, f"column Tags: expected a JSON object, got {type(obj).__name__}")
    return [{"key": str(k), "value": v if isinstance(v, str) else json.dumps(v)} for k, v in obj.items()]


def _tag_lookup(texts: list[str], where: str) -> pl.DataFrame:
    """Each distinct ``Tags`` text with its entries (``_map``), parsed once."""
    return pl.DataFrame({"tags": pl.Series(texts, dtype=pl.String), "_map": entry_lists([_parse_tags(t, where) for t in texts])})


def _tags(frame: pl.DataFrame, where: str) -> pl.Series:
    joined = frame.select("tags").join(_tag_lookup(frame["tags"].drop_nulls().unique().to_list(), where), on="tags", how="left", maintain_order="left")
    return joined.select(_MAP).to_series()


_MAP = pl.col("_map").fill_null(pl.lit([], dtype=MAP_ENTRIES)).cast(pl.Map(pl.String, pl.String)).alias("tags")


def _date() -> pl.Expr:
    text = pl.col("date").str.strip_chars()
    return pl.coalesce(text.str.to_date("%m/%d/%Y", strict=False), text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))


def _dates(frame: pl.DataFrame, where: str) -> pl.DataFrame:
    """Azure writes ``MM/DD/YYYY`` (EA, MCA CSV) or ISO dates; a value in neither names its row."""
    parsed = _date()
    bad = frame.filter(pl.col("date").is_not_null() & parsed.is_null())
    if bad.height:
        raise InputError(where, f"row {bad[LINE][0]}: column Date is not a date: {bad['date'][0][:40]!r}")
    return frame.with_columns(parsed.alias("date"))


def read_azure_file(path: Path, where: str, name: str, source) -> pl.DataFrame:
    try:
        if path.name.lower().endswith(".parquet"):
            raw = pl.read_parquet(path).cast(pl.String)
        else:
            raw = pl.read_csv(path, infer_schema=False, null_values=[""], encoding="utf8-lossy")
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file, reported by name
        raise InputError(where, f"cannot read Azure cost export: {exc}") from None
    raw = with_line_numbers(raw)
    if raw.is_empty():
        return empty_cost_lines()
    frame = _select(raw, where, source.currency)
    if source.currency:
        frame = frame.with_columns(pl.col("currency").fill_null(source.currency))
    require_values(frame, ["date"], where)
    frame = _dates(frame, where)
    frame = parse_money(frame, ["cost", "list_cost"], where)
    frame = frame.with_columns(_tags(frame, where))
    missing_currency = frame.filter(pl.col("currency").is_null())
    if missing_currency.height:
        raise InputError(where, f"row {missing_currency[LINE][0]}: the billing currency is empty")
    return _normalized(frame.lazy(), source, name).collect()


def scan_azure_file(path: Path, where: str, name: str, source, days: list[dt.date] | None = None,
                    maps: list[pl.DataFrame] | None = None) -> pl.LazyFrame | None:
    """An Azure cost export (CSV, CSV.gz or Parquet) as cost lines, lazily, never the whole file in
    memory: parsed once into a local Parquet copy (``lib/billing/spill.py``) by a streaming pass that
    also finds every date and amount parsing and every line with a date and a currency (its distinct
    ``Tags`` texts, few, are parsed once and joined back). None for a file failing that pass or missing
    a column, which :func:`read_azure_file` then reads whole, naming the row. ``maps``: see
    :func:`columns.joined_tags`."""
    if (export := scan_export(path, [""])) is None:
        return None
    raw, schema, _ = export
    found = _found(schema.names())
    if any(found[t] is None for t in REQUIRED + ([] if source.currency else ["currency"])):
        return None
    blank, blanks = blank_lines(raw, [c for c in found.values() if c])
    frame = raw.select(*[pl.col(c).cast(pl.String).alias(t) if c else pl.lit(None, pl.String).alias(t) for t, c in found.items()], blank)
    if source.currency:
        frame = frame.with_columns(pl.col("currency").fill_null(source.currency))
    parsed = {"date": _date(), "cost": text_money("cost"), "list_cost": text_money("list_cost")}
    bad = [pl.col(c).is_not_null() & e.is_null() for c, e in parsed.items()]
    typed = frame.with_columns(*(e.alias(c) for c, e in parsed.items()),
                               pl.any_horizontal(*bad, pl.col("date").is_null(), pl.col("currency").is_null()).alias(BAD))
    copy = checked_copy(path, typed, _context(source), blanks, distinct="tags", lookup=lambda texts: _tag_lookup(texts, where), repeats=True)
    if copy is None:
        return None
    frame, tags = copy
    if days:
        frame = frame.filter(pl.col("date").is_in(days))
    return _normalized(joined_tags(frame, tags, "_map", maps), source, name)


def _context(source) -> str:
    return f"azure|{source.currency or ''}"


def identical_lines(path: Path, source) -> bool:
    """Whether the parsed copy of an export holds identical lines: daily cost details carry no time of
    day and no line ids, so the same meter on the same resource may bill the same amount twice a day
    (28 of the bench's 1 M lines: the day was then written twice, once for its content ids)."""
    return identical_rows(path, _context(source))


def _normalized(frame: pl.LazyFrame, source, name: str) -> pl.LazyFrame:
    """Azure columns (renamed, typed) as cost_lines; billed cost from the dataset (module docstring)."""
    model = pl.col("pricing_model").fill_null("").str.to_lowercase().str.replace_all(r"\s", "")
    charge = pl.col("charge_type").fill_null("Usage")
    covered = model.is_in(COMMITMENT_MODELS) & charge.is_in(["Usage", "UnusedReservation", "UnusedSavingsPlan"])
    amortized = getattr(source, "dataset", "amortized") == "amortized"
    start = pl.col("date").cast(pl.Datetime("us", "UTC"))
    return conform(
        frame.with_columns(
            provider=pl.lit("azure"),
            source=pl.lit(source.name),
            line_item_id=pl.lit(None, pl.String),
            charge_category=lookup(charge, {"Purchase": "Purchase", "Refund": "Credit", "Tax": "Tax", "RoundingAdjustment": "Adjustment"}, default="Usage"),
            charge_period_start=start,
            charge_period_end=start + pl.duration(days=1),
            usage_quantity=pl.col("usage_quantity").cast(pl.Float64, strict=False),
            billed_cost=pl.when(pl.lit(amortized) & covered).then(pl.lit(0).cast(pl.Decimal(38, 12))).otherwise(pl.col("cost")),
            effective_cost=pl.col("cost"),
            charge_type=charge,
            is_final=pl.col("invoice_id").fill_null("").str.len_chars() > 0,
            source_file=pl.lit(name),
            billing_account_id=pl.col("billing_account_id").fill_null("unknown"),
        )
    )
