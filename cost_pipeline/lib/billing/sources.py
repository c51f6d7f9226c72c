"""Dispatch each configured billing source to the reader of its provider's export format."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import polars as pl

from cost_pipeline.config import BillingSource
from cost_pipeline.lib.billing.cur2 import read_cur2_day
from cost_pipeline.lib.billing.cur_legacy import read_cur_legacy_day
from cost_pipeline.lib.billing.currencies import ISO_4217
from cost_pipeline.lib.billing.focus import read_focus_day
from cost_pipeline.lib.billing.gcp import read_gcp_day
from cost_pipeline.lib.billing.schema import empty_cost_lines
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.storage import Storage

READERS: dict[str, Callable[[BillingSource, dt.date, Storage], pl.DataFrame]] = {
    "aws_cur2": lambda s, day, st: read_cur2_day(s.uri, day, s.name, st),
    "aws_cur_legacy": lambda s, day, st: read_cur_legacy_day(s.uri, day, s.name, st),
    "focus": lambda s, day, st: read_focus_day(s.uri, day, s.name, st, default_currency=s.currency),
    "gcp_billing_export": lambda s, day, st: read_gcp_day(s.uri, day, s.name, st),
}


def read_source_day(source: BillingSource, day: dt.date, storage: Storage | None = None) -> pl.DataFrame:
    reader = READERS.get(source.format)
    if reader is None:
        raise InputError(f"billing source {source.name!r}", f"format {source.format!r} is not readable yet")
    return check_currencies(reader(source, day, storage or Storage()), source)


def check_currencies(lines: pl.DataFrame, source: BillingSource) -> pl.DataFrame:
    """Amounts are only ever summed within one currency, so a currency must be a real ISO 4217 code."""
    bad = lines.filter(~pl.col("currency").is_in(ISO_4217) | pl.col("currency").is_null())
    if bad.height:
        first = bad.row(0, named=True)
        raise InputError(
            f"{source.uri}/{first['source_file']}",
            f"unknown currency {str(first['currency'])[:20]!r} on {bad.height} line(s), e.g. line {first['line_item_id']}",
        )
    return lines


def read_billing_day(
    sources: list[BillingSource], day: dt.date, storage_for: Callable[[BillingSource], Storage] | None = None
) -> pl.DataFrame:
    """Every source's charges for one day, as one cost_lines frame. Any bad source fails the day."""
    frames = [read_source_day(s, day, storage_for(s) if storage_for else None) for s in sources]
    return pl.concat(frames) if frames else empty_cost_lines()
