"""The GCP Cloud Billing detailed export: a BigQuery table, or its Parquet / JSONL extracts.

Effective cost is ``cost + sum(credits.amount)`` (credits are negative: sustained and committed use
discounts, free tier, promotions), which is how GCP's own reports show net cost. Resource labels
(``labels``) and project labels (``project.labels``) are key/value records; a resource label wins
over a project label of the same key. GCP marks no line as final, so a day counts as final once its
invoice month is over.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.json as pj

from cost_pipeline.lib.billing.columns import (
    MAP_DTYPE,
    VALUES_KEY,
    in_days,
    join_on_key,
    join_on_values,
    keys_distinct,
    parse_money,
    parse_timestamps,
    utc_timestamps,
    values_key,
)
from cost_pipeline.lib.billing.columns import single_day as file_single_day
from cost_pipeline.lib.billing.fingerprint import tag_set_hash
from cost_pipeline.lib.billing.gcp_json import typed_copy
from cost_pipeline.lib.billing.schema import conform, empty_cost_lines
from cost_pipeline.lib.billing.spill import folder_for, prune, published
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.exprs import lookup
from cost_pipeline.lib.keys import fold_key_expr
from cost_pipeline.lib.memory import row_groups_ahead
from cost_pipeline.lib.money import MONEY

REQUIRED = ["billing_account_id", "service", "sku", "usage_start_time", "usage_end_time", "cost", "currency"]
SUFFIXES = (".parquet", ".jsonl", ".json", ".ndjson", ".jsonl.gz")
_ENTRIES = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))


def _field(column: str, field: str, schema: pl.Schema) -> pl.Expr:
    dtype = schema.get(column)
    if isinstance(dtype, pl.Struct) and field in [f.name for f in dtype.fields]:
        return pl.col(column).struct.field(field).cast(pl.String)
    return pl.lit(None, pl.String)


def _labels(column: str, schema: pl.Schema, parent: str | None = None) -> pl.Expr:
    dtype = schema.get(parent) if parent else schema.get(column)
    if parent:
        if not (isinstance(dtype, pl.Struct) and column in [f.name for f in dtype.fields]):
            return pl.lit([], dtype=_ENTRIES)
        expr = pl.col(parent).struct.field(column)
    elif isinstance(dtype, pl.List):
        expr = pl.col(column)
    else:
        return pl.lit([], dtype=_ENTRIES)
    return expr.list.eval(pl.struct(key=pl.element().struct.field("key").cast(pl.String), value=pl.element().struct.field("value").cast(pl.String))).fill_null([])


LABELS = ["_resource_labels", "_project_labels"]  # a line's labels as entries lists, before they are merged into its tags


def _resource_over_project(frame: pl.DataFrame) -> pl.Series:
    """Resource labels win over project labels of the same key, *after* key folding (a resource's
    ``ml_team`` hides the project's ``ml-team``). Two spellings on the resource itself both stay, so
    the tag schema can see and quarantine a conflict between them.

    Merged once per distinct pair of label lists and joined back: lines repeat a few pairs (a
    200,000-row page of the bench's export: 14,768), and merging every line's was 0.35 s of it, 0.13 s so."""
    tags = _pair_tags(frame.select(LABELS).unique(maintain_order=True))
    return frame.select(LABELS).join(tags, on=LABELS, how="left", nulls_equal=True, maintain_order="left")["tags"]


def _pair_tags(pairs: pl.DataFrame) -> pl.DataFrame:
    """Each (resource labels, project labels) pair of ``pairs`` with its merged ``tags`` entries."""
    frame = pairs.with_row_index("_line")
    entries = pl.concat(
        [frame.select("_line", pl.col(c).alias("tag")).explode("tag").with_columns(rank=pl.lit(r)) for r, c in enumerate(LABELS)]
    ).filter(pl.col("tag").is_not_null())
    folded = fold_key_expr(pl.col("tag").struct.field("key"))
    kept = entries.filter(pl.col("rank") == pl.col("rank").min().over("_line", folded)).sort("_line", "rank", maintain_order=True)
    tags = kept.group_by("_line", maintain_order=True).agg(pl.col("tag"))
    joined = frame.select("_line").join(tags, on="_line", how="left", maintain_order="left")
    return pairs.with_columns(joined["tag"].fill_null(pl.lit([], dtype=_ENTRIES)).cast(_ENTRIES).alias("tags"))


def _credits(schema: pl.Schema, most: int) -> pl.Expr:
    """The sum of a line's credits (each amount exact as its text), for lines holding at most ``most``:
    the first ``most`` credits added one by one. Summing each line's list of decimals was 4.5 s of a
    10 M-line day (2.4 M credits), 1.2 s so."""
    if not isinstance(schema.get("credits"), pl.List) or not most:
        return pl.lit(0)
    amount = (pl.col("credits").list.get(i, null_on_oob=True).struct.field("amount") for i in range(most))
    return pl.sum_horizontal(*(a.cast(pl.String).cast(MONEY).fill_null(0) for a in amount))


def _most_credits(schema: pl.Schema) -> pl.Expr:
    """The most credits a line holds (0 without a list of credits)."""
    return pl.col("credits").list.len().max().fill_null(0) if isinstance(schema.get("credits"), pl.List) else pl.lit(0)


def _columns(schema: pl.Schema, most_credits: int, labels: bool = True) -> list[pl.Expr]:
    """The export's columns the mapping reads, under cost_lines names (amounts and times as delivered,
    the labels as :data:`LABELS` unless not ``labels``; ``most_credits``: see :func:`_credits`)."""
    credits = _credits(schema, most_credits)
    return [
        pl.col("billing_account_id").cast(pl.String),
        _field("project", "id", schema).alias("sub_account_id"),
        _field("service", "description", schema).alias("service"),
        _field("sku", "description", schema).alias("usage_type"),
        _field("location", "region", schema).alias("region"),
        (_field("resource", "global_name", schema) if "resource" in schema else pl.lit(None, pl.String)).alias("resource_id"),
        pl.col("usage_start_time").alias("charge_period_start"),
        pl.col("usage_end_time").alias("charge_period_end"),
        pl.col("cost").alias("billed_cost"),
        (pl.col("cost_at_list") if "cost_at_list" in schema else pl.lit(None, pl.String)).alias("list_cost"),
        credits.alias("credits"),
        pl.col("currency").cast(pl.String),
        (_field("usage", "amount", schema) if "usage" in schema else pl.lit(None, pl.String)).alias("usage_quantity"),
        _field("invoice", "month", schema).alias("invoice_id"),
        (pl.col("cost_type").cast(pl.String) if "cost_type" in schema else pl.lit("regular")).alias("cost_type"),
        *(_label_pair(schema) if labels else []),
    ]


def _label_pair(schema: pl.Schema) -> list[pl.Expr]:
    return [_labels("labels", schema).alias(LABELS[0]), _labels("labels", schema, parent="project").alias(LABELS[1])]


def _required(names: list[str], where: str) -> None:
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(where, f"missing required GCP billing export column(s): {', '.join(missing)}")


def normalize_gcp(raw: pl.DataFrame, source: str, where: str, name: str, first_row: int = 0) -> pl.DataFrame:
    """``raw`` (the export's rows from ``first_row`` on, for the row numbers in errors) as cost lines."""
    _required(raw.columns, where)
    frame = raw.select(_columns(raw.schema, raw.select(_most_credits(raw.schema)).item()))
    frame = frame.with_columns(tags=_resource_over_project(frame)).drop(LABELS)
    # BigQuery's text form ("2026-09-01 00:00:00 UTC") as ISO text; typed timestamps (Parquet) are taken as they are
    text = [c for c in ("charge_period_start", "charge_period_end") if not isinstance(frame.schema[c], pl.Datetime)]
    frame = frame.with_columns(pl.col(text).cast(pl.String).str.replace(r" UTC$", "+00:00"))
    frame = parse_timestamps(frame, ["charge_period_start", "charge_period_end"], where, header_rows=1 + first_row)
    frame = parse_money(frame, ["billed_cost", "list_cost"], where, header_rows=1 + first_row)
    return _finished(frame.lazy(), source, name).collect()


def _finished(frame: pl.LazyFrame, source: str, name: str) -> pl.LazyFrame:
    """Typed lines with their ``tags`` entries (or null tags beside their tag-set hashes) as cost lines."""
    category = lookup(pl.col("cost_type"), {"tax": "Tax", "adjustment": "Adjustment", "rounding_error": "Adjustment"}, default="Usage")
    this_month = dt.datetime.now(dt.UTC).strftime("%Y%m")
    return conform(
        frame.with_columns(
            date=pl.col("charge_period_start").dt.date(),
            provider=pl.lit("gcp"),
            source=pl.lit(source),
            line_item_id=pl.lit(None, pl.String),  # content hash, given by the reader flow
            charge_type=pl.col("cost_type"),
            charge_category=category,
            usage_quantity=pl.col("usage_quantity").cast(pl.Float64, strict=False),
            effective_cost=pl.col("billed_cost") + pl.col("credits").fill_null(0).cast(pl.Decimal(38, 12)),
            is_final=pl.col("invoice_id").fill_null(this_month) < this_month,
            tags=pl.col("tags").cast(_ENTRIES).cast(pl.Map(pl.String, pl.String)),
            source_file=pl.lit(name),
        )
    )


PAGE_ROWS = 200_000  # rows of an export file or a BigQuery answer normalized at a time


def read_gcp_file(path: Path, where: str, name: str, source) -> pl.DataFrame:
    try:
        raw = pl.read_parquet(path) if path.name.endswith(".parquet") else pl.read_ndjson(path, infer_schema_length=None)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file, reported by name
        raise InputError(where, f"cannot read GCP billing export file: {exc}") from None
    return empty_cost_lines() if raw.is_empty() else normalize_gcp(raw, source.name, where, name)


def scan_gcp_file(path: Path, where: str, name: str, source, days: list[dt.date] | None = None, page_rows: int = PAGE_ROWS,
                  maps: list[pl.DataFrame] | None = None) -> pl.LazyFrame:
    """A GCP export file (Parquet or JSONL) as cost lines, never held whole; content ids come from the
    reader flow (``lib/billing/sources.py``, :func:`lazy_content_ids`), as for a whole read.

    A Parquet file typed as BigQuery extracts it is scanned lazily (:func:`_scan_typed`), and so is a
    JSONL extract's typed copy (:func:`gcp_json.typed_copy`). Any other file is read ``page_rows`` rows
    at a time (:func:`_batches`), each batch normalized and written on its own (once per file version,
    beside the parsed copies of ``lib/billing/spill.py``), then scanned lazily: a bad value is then
    named by its row, as a whole read names it. ``maps``: see :func:`_scan_typed`; the
    pages' lines carry their maps."""
    if (typed := _typed_file(path)) is not None and (lazy := _scan_typed(typed, where, name, source, days, maps)) is not None:
        return lazy

    def build(folder: Path) -> None:
        try:
            try:
                pages = _write_pages(_batches(path, page_rows, polars=False), folder, source.name, where, name)
            except pa.ArrowException:  # PyArrow's JSON types, from the first block, do not hold for a later one
                pages = _write_pages(_batches(path, page_rows, polars=True), folder, source.name, where, name)
        except pl.exceptions.PolarsError as exc:
            raise InputError(where, f"cannot read GCP billing export file: {str(exc).splitlines()[0]}") from None
        (folder / "pages.json").write_text(json.dumps([p.name for p in pages]))

    folder = published(folder_for(path, f"gcp|{source.name}|{name}|{page_rows}"), build)
    frame = pl.scan_parquet([folder / page for page in json.loads((folder / "pages.json").read_text())])
    return frame.filter(pl.col("date").is_in(days)) if days else frame


def _scan_typed(path: Path, where: str, name: str, source, days: list[dt.date] | None, maps: list[pl.DataFrame] | None) -> pl.LazyFrame | None:
    """A Parquet export typed as BigQuery extracts it (usage times as timestamps, amounts as numbers) as
    a lazy plan, only the ``days``' row groups: a first streaming pass over the labels finds their
    distinct (resource, project) pairs, merged once each (:func:`_pair_tags`), each line's pair key
    (a 64-bit hash of the pair), which the lines' plan gathers by the line's position and joins the
    pairs on, and the most credits a line holds (:func:`_credits`; all :func:`_first_pass`).
    Normalized a page at a time and written out instead, a 10 M-line day took 46.6 s; with the lines'
    plan decoding the label lists again to join on them, 17.0-17.2 s, 14.8-15.5 s so (+0.08 GiB: the
    keys). If two pairs ever share a key, the lines' plan reads the lists and joins on them. ``maps``: the
    caller wants each line's tag-set hashes (computed per pair) rather than its tags, which are left
    null; the pairs' maps are appended to ``maps``. None for a file that is not typed so, or misses a
    column: its pages name the problem."""
    try:
        raw = pl.scan_parquet(path)
        schema = raw.collect_schema()
    except pl.exceptions.PolarsError:
        return None
    credits = schema.get("credits")
    amounts = (credits is None or not isinstance(credits, pl.List) or
               (isinstance(credits.inner, pl.Struct) and any(f.name == "amount" and f.dtype.is_numeric() for f in credits.inner.fields)))
    if (any(c not in schema for c in REQUIRED) or not all(isinstance(schema[c], pl.Datetime) for c in ("usage_start_time", "usage_end_time"))
            or not all(schema[c].is_numeric() for c in ("cost", "cost_at_list") if c in schema) or not amounts):
        return None
    raw = _of_days(raw, schema, days)
    stat = path.stat()
    pairs, most_credits, keys = _first_pass(path.resolve(), (stat.st_size, stat.st_mtime_ns), tuple(days) if days else None, where)
    keyed = keys_distinct(pairs, LABELS)  # else joined on the label lists themselves
    lines = raw.select(_columns(schema, most_credits, labels=not keyed))
    if keyed:  # each line's pair by its key from the first pass, in the same order: the lists are not decoded again
        lines = lines.with_row_index("_line").with_columns(pl.lit(keys).gather(pl.col("_line")).alias(VALUES_KEY)).drop("_line")
    lines = lines.with_columns(
        *(utc_timestamps(c, schema[raw_name]).alias(c) for c, raw_name in (("charge_period_start", "usage_start_time"), ("charge_period_end", "usage_end_time"))),
        pl.col("billed_cost", "list_cost").cast(MONEY),
    )
    if maps is not None:
        pairs = pairs.with_columns(pl.col("tags").cast(MAP_DTYPE)).with_columns(tag_set=tag_set_hash(), check=tag_set_hash(seed=2))
        maps.append(pairs.select("tag_set", "check", "tags"))
        pairs = pairs.select(*LABELS, "tag_set", pl.col("check").alias("_check"), pl.lit(None, _ENTRIES).alias("tags"))
    return _finished(join_on_key(lines, pairs, LABELS) if keyed else join_on_values(lines, pairs, LABELS).drop(LABELS), source.name, name)


@functools.lru_cache(maxsize=2)
def _first_pass(path: Path, version: tuple[int, int], days: tuple[dt.date, ...] | None, where: str) -> tuple[pl.DataFrame, int, pl.Series]:
    """The first pass of :func:`_scan_typed` over ``days``' lines of a typed export: each distinct label
    pair with its merged ``tags`` (:func:`_pair_tags`), the most credits a line holds, and each line's
    pair key (:func:`columns.values_key` of :data:`LABELS`), in the lines' order. Kept for the
    next reads of the same file version and days: an ingest that finds identical lines reads the day
    again numbered, and a failing one again to name the problem (5 s a 10 M-line day each time)."""
    raw = pl.scan_parquet(path)
    schema = raw.collect_schema()
    raw = _of_days(raw, schema, list(days) if days else None)
    labels = raw.select(_label_pair(schema))
    try:  # one pass: the distinct label pairs, each line's pair key and the most credits a line holds
        with row_groups_ahead(2):  # nested records: decoded on one core one row group ahead
            pairs, keys, most = pl.collect_all([labels.unique(maintain_order=True), labels.select(values_key(LABELS)),
                                                raw.select(_most_credits(schema))], engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise InputError(where, f"cannot read GCP billing export file: {str(exc).splitlines()[0]}") from None
    return _pair_tags(pairs), most.item(), keys.to_series()


def _of_days(raw: pl.LazyFrame, schema: pl.Schema, days: list[dt.date] | None) -> pl.LazyFrame:
    """At least ``days``' lines of a typed export (all without), filtered on the raw usage start, where
    the row groups' statistics apply (the caller filters the exact days)."""
    return raw.filter(in_days(utc_timestamps("usage_start_time", schema["usage_start_time"]), days)) if days else raw


def usage_days(path: Path) -> pl.LazyFrame | None:
    """Each line's usage day (``date``, in the file's order) of a Parquet extract or a JSONL extract's
    typed copy, read from the usage starts alone: read through the typed plan, a file's days ran its
    first pass (every line's label pairs, ~5 s per 10 M lines) only to be dropped. None when the usage
    starts are not typed (the file's days are then read with its lines)."""
    typed = _typed_file(path)
    try:
        schema = pl.scan_parquet(typed).collect_schema() if typed is not None else {}
    except pl.exceptions.PolarsError:
        return None
    start = schema.get("usage_start_time")
    if not isinstance(start, pl.Datetime):
        return None
    return pl.scan_parquet(typed).select(date=utc_timestamps("usage_start_time", start).dt.date())


def single_day(path: Path) -> dt.date | None:
    """The UTC day of every line of a Parquet export whose footer says so (:func:`columns.single_day`),
    or of a JSONL extract whose typed copy's footer does (other files: :func:`usage_days`)."""
    typed = _typed_file(path)
    return file_single_day(typed, "usage_start_time") if typed is not None else None


def _typed_file(path: Path) -> Path | None:
    """The Parquet file a typed read may scan: a Parquet extract itself, a JSONL extract's typed copy
    (None when the copy refuses it: its pages then read it)."""
    return path if path.name.endswith(".parquet") else typed_copy(path, REQUIRED)


def _batches(path: Path, rows: int, polars: bool) -> Iterator[pl.DataFrame]:
    """An export file's rows about ``rows`` at a time. JSONL by PyArrow's streaming reader unless
    ``polars``: Polars' reader inferred the types over the whole file first and held 4.4 GiB for a 1 M-line
    extract (PyArrow infers them from the first block, and raises if a later one differs)."""
    if path.name.endswith(".parquet") or polars:
        raw = pl.scan_parquet(path) if path.name.endswith(".parquet") else pl.scan_ndjson(path, infer_schema_length=None)
        yield from raw.collect_batches(chunk_size=rows)
        return
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in pj.open_json(path):
        pending.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield pl.from_arrow(pa.Table.from_batches(pending))
            pending, held = [], 0
    if pending:
        yield pl.from_arrow(pa.Table.from_batches(pending))


def _write_pages(batches: Iterable[pl.DataFrame], folder: Path, source: str, where: str, name: str) -> list[Path]:
    """Each batch of export rows normalized on its own and written to ``folder`` (``page-00000.parquet``,
    ...; one empty page when there are no rows), numbering rows across batches for errors."""
    pages, first_row = [], 0
    for batch in batches:
        if batch.height:
            pages.append(folder / f"page-{len(pages):05d}.parquet")
            normalize_gcp(batch, source, where, name, first_row).write_parquet(pages[-1])
            first_row += batch.height
    if not pages:
        pages.append(folder / "page-00000.parquet")
        empty_cost_lines().write_parquet(pages[-1])
    return pages


# Rows for a usage day keep arriving in later partitions (GCP restates past days for weeks, and
# _PARTITIONTIME follows the export, not the usage), so the day query covers every partition from
# the day before the usage day on, and filters on usage_start_time itself.
DAY_SQL = """
    SELECT {columns} FROM `{table}`
    WHERE DATE(_PARTITIONTIME) >= DATE_SUB(@day, INTERVAL 1 DAY)
      AND usage_start_time >= TIMESTAMP(@day) AND usage_start_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 1 DAY))
"""
# What the export wrote since the cursor, per usage day: the sensor's cheap question.
CHANGED_SQL = """
    SELECT DATE(usage_start_time) AS day, MAX(export_time) AS newest_export, COUNT(*) AS new_rows
    FROM `{table}`
    WHERE DATE(_PARTITIONTIME) >= DATE_SUB(DATE(@since), INTERVAL 1 DAY) AND export_time > @since
    GROUP BY day
"""


# the export's columns normalize_gcp reads: BigQuery bills a query by the bytes of every column it names,
# and the export's others (system_labels, tags, price, adjustment_info, export_time, ...) are never used
READ_COLUMNS = ["billing_account_id", "service", "sku", "project", "labels", "location", "resource", "usage_start_time",
                "usage_end_time", "cost", "cost_at_list", "currency", "credits", "usage", "invoice", "cost_type"]


def bigquery_day_files(table: str, day: dt.date, source: str, client, folder: Path, page_rows: int = PAGE_ROWS) -> list[Path]:
    """One usage day of the export table, from every partition that can hold its rows, as cost lines
    written to ``folder`` a page of ``page_rows`` at a time (``page-00000.parquet``, ...; content ids
    are left to the reader flow): a day of tens of millions of rows is never held whole. Only the
    columns the mapping reads, of those the table has (``resource`` and ``cost_at_list`` are in the
    detailed export only; a missing required one is named by the mapping)."""
    from google.api_core.exceptions import GoogleAPIError
    from google.cloud import bigquery

    try:
        present = {field.name for field in client.get_table(table).schema}
    except GoogleAPIError as exc:  # e.g. a table that does not exist, or no permission to read it
        raise InputError(f"bq://{table}", f"cannot read the billing export table: {str(exc).splitlines()[0][:200]}") from None
    columns = ", ".join(f"`{c}`" for c in READ_COLUMNS if c in present) or "*"
    params = [bigquery.ScalarQueryParameter("day", "DATE", day)]
    job = client.query(DAY_SQL.format(table=table, columns=columns), job_config=bigquery.QueryJobConfig(query_parameters=params))
    prune(folder.parent)  # other days' answers, unused for a week
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    answer = (pl.from_arrow(batch) for batch in job.result(page_size=page_rows).to_arrow_iterable())
    return _write_pages(answer, folder, source, f"bq://{table}", table)


def bigquery_changed_days(table: str, since: dt.datetime, client) -> list[tuple[dt.date, dt.datetime, int]]:
    """(usage day, newest export_time, rows exported) for every day the export added rows to after ``since``."""
    from google.cloud import bigquery

    params = [bigquery.ScalarQueryParameter("since", "TIMESTAMP", since)]
    job = client.query(CHANGED_SQL.format(table=table), job_config=bigquery.QueryJobConfig(query_parameters=params))
    return sorted((row["day"], row["newest_export"], int(row["new_rows"])) for row in job.result())
