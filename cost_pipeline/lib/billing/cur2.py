"""AWS Data Exports CUR 2.0, read as delivered: ``<uri>/data/BILLING_PERIOD=YYYY-MM/*.parquet``.

AWS overwrites a billing period's folder each time it restates the month, so the files present in
the period's folder are the current truth for every day of that month. A charge belongs to the UTC
day its usage started, whichever period delivered it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from cost_pipeline.lib.billing.amortize import (
    AMORTIZATION_COLUMNS,
    charge_category,
    effective_cost,
)
from cost_pipeline.lib.billing.schema import conform, empty_cost_lines
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.money import MONEY
from cost_pipeline.lib.storage import Storage, StoredFile

REQUIRED_COLUMNS = [
    "identity_line_item_id",
    "bill_invoice_id",
    "bill_payer_account_id",
    "line_item_usage_account_id",
    "line_item_line_item_type",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_product_code",
    "line_item_usage_type",
    "line_item_resource_id",
    "line_item_usage_amount",
    "line_item_currency_code",
    "line_item_unblended_cost",
    "pricing_public_on_demand_cost",
    "product_region_code",
    "resource_tags",
    *AMORTIZATION_COLUMNS,
]


def period_files(uri: str, day: dt.date, storage: Storage | None = None) -> list[StoredFile]:
    """The files AWS delivered last for the billing period holding ``day``."""
    folder = f"data/BILLING_PERIOD={day:%Y-%m}/"
    return [
        f for f in (storage or Storage()).list(uri)
        if f.name.startswith(folder) and f.name.endswith(".parquet") and "/" not in f.name[len(folder):]
        and not f.name[len(folder):].startswith((".", "_"))
    ]


def _check_file(path: Path, where: str) -> None:
    try:
        names = set(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several types for truncated or non-Parquet files
        raise InputError(where, f"not a readable Parquet file ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputError(where, f"missing required CUR 2.0 column(s): {', '.join(missing)}")


def normalize_cur2(frame: pl.LazyFrame, source: str, source_file: str) -> pl.LazyFrame:
    """CUR 2.0 columns → cost_lines columns, with amortized effective cost."""
    invoice = pl.col("bill_invoice_id").cast(pl.String)
    return conform(
        frame.with_columns(
            date=pl.col("line_item_usage_start_date").dt.date(),
            provider=pl.lit("aws"),
            source=pl.lit(source),
            billing_account_id=pl.col("bill_payer_account_id"),
            sub_account_id=pl.col("line_item_usage_account_id"),
            line_item_id=pl.col("identity_line_item_id"),
            charge_type=pl.col("line_item_line_item_type"),
            charge_category=charge_category(),
            charge_period_start=pl.col("line_item_usage_start_date"),
            charge_period_end=pl.col("line_item_usage_end_date"),
            service=pl.col("line_item_product_code"),
            usage_type=pl.col("line_item_usage_type"),
            region=pl.col("product_region_code"),
            resource_id=pl.col("line_item_resource_id"),
            usage_quantity=pl.col("line_item_usage_amount"),
            list_cost=pl.col("pricing_public_on_demand_cost").cast(MONEY),
            billed_cost=pl.col("line_item_unblended_cost").cast(MONEY),
            effective_cost=effective_cost(),
            currency=pl.col("line_item_currency_code"),
            invoice_id=invoice,
            is_final=invoice.fill_null("").str.len_chars() > 0,
            tags=pl.col("resource_tags"),
            source_file=pl.lit(source_file),
        )
    )


def _typed(frame: pl.LazyFrame, path: str) -> pl.LazyFrame:
    """Coerce timestamps and amounts, so a string-typed export still reads; fail naming the column."""
    schema = frame.collect_schema()
    fixes = []
    for name in ("line_item_usage_start_date", "line_item_usage_end_date"):
        dtype = schema[name]
        if dtype == pl.String:
            fixes.append(pl.col(name).str.to_datetime(time_zone="UTC", strict=True))
        elif isinstance(dtype, pl.Datetime):
            fixes.append(
                pl.col(name).dt.replace_time_zone("UTC") if dtype.time_zone is None else pl.col(name)
            )
        else:
            raise InputError(str(path), f"column {name} has type {dtype}, expected a timestamp")
    if not isinstance(schema["resource_tags"], pl.Map):
        raise InputError(str(path), f"column resource_tags has type {schema['resource_tags']}, expected map<string,string>")
    for name in ("line_item_unblended_cost", "line_item_usage_amount"):
        if not (schema[name].is_numeric() or schema[name] == pl.String):
            raise InputError(str(path), f"column {name} has type {schema[name]}, expected a number")
    return frame.with_columns(fixes)


def read_cur2_day(uri: str, day: dt.date, source: str, storage: Storage | None = None) -> pl.DataFrame:
    """All charges whose usage started on ``day``, from the period folder AWS delivered last."""
    storage = storage or Storage()
    files = period_files(uri, day, storage)
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    parts = []
    for stored in files:
        path = storage.fetch(stored)
        _check_file(path, stored.uri)
        lf = _typed(pl.scan_parquet(path), stored.uri)
        lf = lf.filter(
            (pl.col("line_item_usage_start_date") >= start) & (pl.col("line_item_usage_start_date") < end)
        )
        try:  # collected file by file, so a value that does not parse is reported with its file
            parts.append(normalize_cur2(lf, source, stored.name).collect(engine="streaming"))
        except pl.exceptions.PolarsError as exc:
            raise InputError(stored.uri, f"cannot read billing data: {str(exc).splitlines()[0]}") from None
    if not parts:
        return empty_cost_lines()
    frame = pl.concat(parts)
    _check_values(frame, uri, day)
    return frame


def _check_values(frame: pl.DataFrame, uri: str, day: dt.date) -> None:
    bad = frame.filter(pl.col("effective_cost").is_null() | pl.col("currency").is_null())
    if bad.height:
        first = bad.row(0, named=True)
        raise InputError(
            first["source_file"],
            f"{bad.height} line(s) of {day} without an amount or currency, "
            f"e.g. line {first['line_item_id']} ({first['charge_type']})",
        )
