"""GCP billing export JSONL extracts turned into the Parquet file BigQuery's Parquet extract would be.

Polars' JSON reader parsed a 1 M-line JSONL extract (810 MB of nested records) in 44.7 s at 4.4 GiB
(its schema inferred over the whole file first: 10.5 s more), so the extract went through pages
normalized one by one: 55.6 s at 4.74 GiB for its ingest, and a 10 M-line day would not have fit this
machine. PyArrow's streaming JSON reader, told the columns the mapping reads and their types (the
others skipped while parsing), parses it in ~7 s at 0.4 GiB. The copy is written once per file version
(``lib/billing/spill.py``) with the usage times typed, and is then read like a Parquet extract
(``gcp._scan_typed``): the same lines, content ids, tag sets and totals.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.json as pj

from cost_pipeline.lib.billing.columns import text_timestamps
from cost_pipeline.lib.billing.spill import BAD, BLANK, checked_copy, copy_file

_TEXT = pa.string()
_PAIRS = pa.list_(pa.struct([("key", _TEXT), ("value", _TEXT)]))
# the export's columns the mapping reads (``gcp.READ_COLUMNS``), as BigQuery types them in JSON
SCHEMA = pa.schema([
    ("billing_account_id", _TEXT),
    ("service", pa.struct([("id", _TEXT), ("description", _TEXT)])),
    ("sku", pa.struct([("id", _TEXT), ("description", _TEXT)])),
    ("project", pa.struct([("id", _TEXT), ("labels", _PAIRS)])),
    ("labels", _PAIRS),
    ("location", pa.struct([("region", _TEXT)])),
    ("resource", pa.struct([("global_name", _TEXT)])),
    ("usage_start_time", _TEXT),
    ("usage_end_time", _TEXT),
    ("cost", pa.float64()),
    ("cost_at_list", pa.float64()),
    ("currency", _TEXT),
    ("credits", pa.list_(pa.struct([("amount", pa.float64())]))),
    ("usage", pa.struct([("amount", pa.float64())])),
    ("invoice", pa.struct([("month", _TEXT)])),
    ("cost_type", _TEXT),
])
TIMES = ["usage_start_time", "usage_end_time"]
CONTEXT = "gcp_billing_export|jsonl"


def typed_copy(path: Path, required: list[str]) -> Path | None:
    """The Parquet copy of a JSONL extract, its usage times typed (BigQuery's text, ``2026-09-01
    00:00:00 UTC``, parsed as the pages parse it). None when PyArrow cannot parse the file with the
    schema (a value of another type, a line that is no JSON object), a usage time does not parse, a
    ``required`` column is null, or ``cost_type`` is (a missing column and a null one are told apart
    there, which a typed copy cannot): the pages then read the file and name the problem."""
    options = pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
    try:
        raw = pl.scan_pyarrow_dataset(ds.dataset(path, format=ds.JsonFileFormat(parse_options=options)))
    except (pa.ArrowException, OSError):
        return None
    utc = raw.with_columns(pl.col(TIMES).str.replace(r" UTC$", "+00:00"))
    times = [text_timestamps(c).alias(c) for c in TIMES]
    bad = pl.any_horizontal(*(pl.col(c).is_not_null() & t.is_null() for c, t in zip(TIMES, times)),
                            *(pl.col(c).is_null() for c in [*required, "cost_type"]))
    typed = utc.with_columns(bad.alias(BAD), pl.lit(False).alias(BLANK)).with_columns(times)
    copied = checked_copy(path, typed, CONTEXT, pl.LazyFrame(), unreadable=(pa.ArrowException,))  # raised through Polars' scan
    return copy_file(path, CONTEXT) if copied is not None else None
