"""Header and value parsing shared by the text-based export readers (FOCUS, legacy CUR, GCP files).

Exports spell one column many ways (``BilledCost``, ``billed_cost``, ``lineItem/UnblendedCost``,
``lineitem_unblendedcost``, a BOM before the first header). Headers are folded to lower-case
alphanumerics before matching, so every variant finds its column, and a truly missing column is
reported by its documented name together with the file.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from cost_pipeline.lib.billing.fingerprint import tag_set_hash
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.money import MONEY

LINE = "__line__"


def with_line_numbers(raw: pl.DataFrame, header_rows: int = 1) -> pl.DataFrame:
    """Number rows as the file does (for error messages), then drop blank lines (CSV ``\\r\\n`` gaps)."""
    numbered = raw.with_row_index(LINE, offset=header_rows + 1)
    return numbered.filter(~pl.all_horizontal(pl.exclude(LINE).is_null()))


def fold_column(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lstrip("\ufeff").lower())


def scan_export(path: Path, null_values: list[str]) -> tuple[pl.LazyFrame, pl.Schema, dict[str, str]] | None:
    """A Parquet or CSV(.gz) export scanned lazily (CSV as text), its schema and its headers by folded
    name (the first of a spelling); None if it does not open, to be read whole for the error naming it."""
    try:
        raw = (pl.scan_parquet(path) if path.name.lower().endswith(".parquet")
               else pl.scan_csv(path, infer_schema=False, null_values=null_values, encoding="utf8-lossy"))
        schema = raw.collect_schema()
    except Exception:  # noqa: BLE001 - any reader failure: the whole read names it
        return None
    by_fold: dict[str, str] = {}
    for column in schema:
        by_fold.setdefault(fold_column(column), column)
    return raw, schema, by_fold


def select_columns(frame: pl.DataFrame, wanted: dict[str, str], required: list[str], source: str) -> pl.DataFrame:
    """Rename columns found under any spelling to the names in ``wanted`` (documented → target).

    Columns not present and not required come back as nulls, so readers can treat optional FOCUS
    columns (e.g. ``InvoiceId``, new in 1.2) uniformly.
    """
    by_fold: dict[str, str] = {}
    for column in frame.columns:
        by_fold.setdefault(fold_column(column), column)
    missing = [doc for doc in required if fold_column(doc) not in by_fold]
    if missing:
        raise InputError(source, f"missing required column(s): {', '.join(missing)}")
    return frame.select(
        [
            pl.col(by_fold[fold_column(doc)]).alias(target)
            if fold_column(doc) in by_fold
            else pl.lit(None, dtype=pl.String).alias(target)
            for doc, target in wanted.items()
        ]
        + ([pl.col(LINE)] if LINE in frame.columns else [])
    )


def _first_bad(frame: pl.DataFrame, raw: str, parsed: pl.Expr, header_rows: int) -> tuple[int, str] | None:
    """(line number in the file, raw value) of the first value that does not parse."""
    numbered = frame if LINE in frame.columns else frame.with_row_index(LINE, offset=header_rows + 1)
    bad = numbered.filter(pl.col(raw).is_not_null() & parsed.is_null())
    if bad.is_empty():
        return None
    return int(bad[LINE][0]), str(bad[raw][0])


def parse_money(frame: pl.DataFrame, columns: list[str], source: str, header_rows: int = 1) -> pl.DataFrame:
    """Cast amount columns to exact decimals; an unparseable value names the file, row and column."""
    for column in columns:
        if frame.schema[column].is_numeric():
            frame = frame.with_columns(pl.col(column).cast(MONEY))
            continue
        if frame.schema[column] != pl.String:
            frame = frame.with_columns(pl.col(column).cast(pl.String))
        parsed = text_money(column)
        bad = _first_bad(frame, column, parsed, header_rows)
        if bad:
            raise InputError(source, f"row {bad[0]}: column {column} is not a number: {bad[1][:60]!r}")
        frame = frame.with_columns(parsed.alias(column))
    return frame


def require_values(frame: pl.DataFrame, columns: list[str], source: str, header_rows: int = 1) -> None:
    """A line without a usage start date cannot land on any day: name the file and row."""
    numbered = frame if LINE in frame.columns else frame.with_row_index(LINE, offset=header_rows + 1)
    for column in columns:
        empty = numbered.filter(pl.col(column).is_null())
        if empty.height:
            raise InputError(source, f"row {empty[LINE][0]}: column {column} is empty ({empty.height} line(s) in all)")


def parse_timestamps(frame: pl.DataFrame, columns: list[str], source: str, header_rows: int = 1) -> pl.DataFrame:
    """ISO-8601 timestamps with or without ``T``/``Z``/offset, as UTC; a bad one names file and row.

    The first column is the usage start, which every line must have.
    """
    require_values(frame, columns[:1], source, header_rows)
    for column in columns:
        if isinstance(frame.schema[column], pl.Datetime):
            frame = frame.with_columns(utc_timestamps(column, frame.schema[column]))
            continue
        parsed = text_timestamps(column)
        bad = _first_bad(frame, column, parsed, header_rows)
        if bad:
            raise InputError(source, f"row {bad[0]}: column {column} is not a timestamp: {bad[1][:60]!r}")
        frame = frame.with_columns(parsed.alias(column))
    return frame


def text_timestamps(column: str) -> pl.Expr:
    """ISO-8601 text with or without ``T``/``Z``/offset as UTC; null where it does not parse."""
    text = pl.col(column).cast(pl.String).str.strip_chars().str.replace(r"Z$", "+00:00").str.replace(" ", "T")
    with_zone = text.str.contains(r"[+-]\d\d:?\d\d$")
    return (
        pl.when(with_zone)
        .then(text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us"))
        .otherwise(text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC"))
        .dt.convert_time_zone("UTC")
    )


def text_money(column: str) -> pl.Expr:
    """An amount written as text, as an exact decimal; null where it does not parse."""
    return pl.col(column).str.strip_chars().cast(MONEY, strict=False)


def in_days(moment: pl.Expr, days: list[dt.date]) -> pl.Expr:
    """``moment`` (UTC) from the first of ``days`` to the end of the last, as two comparisons, which
    Polars checks against row-group statistics (callers filter the exact days afterwards)."""
    start = dt.datetime.combine(min(days), dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(max(days) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return (moment >= start) & (moment < end)


def utc_timestamps(column: str, dtype: pl.Datetime) -> pl.Expr:
    """A typed timestamp column as UTC microseconds (a zoneless one is read as UTC)."""
    expr = pl.col(column) if dtype.time_zone else pl.col(column).dt.replace_time_zone("UTC")
    return expr.dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC"))


MAP_DTYPE = pl.Map(pl.String, pl.String)
_ENTRIES = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))


def json_tags(frame: pl.DataFrame, column: str, source: str) -> pl.DataFrame:
    """A JSON-object column (FOCUS ``Tags``) as a string map; parsed once per distinct value."""
    lookup = tag_lookup(frame.select(pl.col(column).drop_nulls().unique()).to_series().to_list(), column, source)
    joined = frame.join(lookup, on=column, how="left", nulls_equal=False, maintain_order="left")
    return joined.with_columns(pl.col("_tags").fill_null(pl.lit([], dtype=_ENTRIES)).cast(MAP_DTYPE).alias(column)).drop("_tags")


def tag_lookup(texts: list[str], column: str, source: str) -> pl.DataFrame:
    """Each distinct JSON text of a tags column (``column``) with its entries (``_tags``); a text that
    is not a JSON object names the file."""
    parsed: dict[str, list[dict]] = {}
    for text in texts:
        try:
            obj = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise InputError(source, f"column {column}: not a JSON object: {text[:60]!r} ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(source, f"column {column}: expected a JSON object, got {type(obj).__name__}")
        parsed[text] = [{"key": str(k), "value": v if isinstance(v, str) else json.dumps(v)} for k, v in obj.items()]
    return pl.DataFrame({column: pl.Series(list(parsed), dtype=pl.String), "_tags": entry_lists(list(parsed.values()))})


_ARROW_ENTRIES = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))


def entry_lists(lists: list[list[dict]]) -> pl.Series:
    """Lists of ``{key, value}`` dicts as a column of entries, built by Arrow: Polars' own construction
    from Python objects took 0.75 s for the 24,000 distinct tags texts of a 1 M-line FOCUS day, Arrow's 0.13 s."""
    return pl.Series(pa.array(lists, type=_ARROW_ENTRIES)).cast(_ENTRIES)


def single_day(path: Path, column: str) -> dt.date | None:
    """The UTC day of every line of a Parquet file whose row groups' statistics say so (``column``, the
    usage starts, typed as timestamps, no nulls, the smallest and largest on one day), from the footer
    alone: finding a daily file's day by reading its usage starts was 0.1 s of each day of a 1 M-line
    backfill. None when the statistics cannot say (a month's part, a string-typed or zoned column,
    missing or odd statistics, an unreadable footer): the file is then read, and the read names what is
    wrong with it."""
    try:
        meta = pq.ParquetFile(path).metadata
        arrow = meta.schema.to_arrow_schema()
        if column not in arrow.names or meta.num_rows == 0:
            return None
        kind = arrow.field(column).type
        if not pa.types.is_timestamp(kind) or kind.tz not in (None, "UTC", "+00:00"):
            return None
        index = [meta.schema.column(i).path for i in range(meta.num_columns)].index(column)
        days = set()
        for group in (meta.row_group(g) for g in range(meta.num_row_groups)):
            if group.num_rows == 0:
                continue
            stats = group.column(index).statistics
            if stats is None or not stats.has_min_max or stats.null_count is None or stats.null_count > 0:
                return None
            if not (isinstance(stats.min, dt.datetime) and isinstance(stats.max, dt.datetime)):  # e.g. an old writer's raw integers
                return None
            days |= {stats.min.date(), stats.max.date()}
    except Exception:  # pyarrow raises several types for damaged footers and odd statistics
        return None
    return days.pop() if len(days) == 1 else None


def joined_tags(frame: pl.LazyFrame, lookup: pl.DataFrame, entries: str, maps: list[pl.DataFrame] | None) -> pl.LazyFrame:
    """``frame``'s ``tags`` texts (a text export's JSON objects) as their maps, from ``lookup`` (each
    distinct text ``tags`` parsed once into ``entries``; a null text: no tags). ``maps``: the caller
    wants tag-set hashes instead (:func:`lib.billing.sources.source_days`): each text's map is hashed
    once and the hashes joined, the lines' tags left null and the maps appended to ``maps``. Joining
    every line's map made each pass over a 10 M-line Azure day 2.2 s longer (content hashes 6.2 s
    against 4.0 s), and an ingest may make three (content ids, numbering, the write)."""
    if maps is None:
        joined = frame.join(lookup.lazy(), on="tags", how="left", maintain_order="left")
        return joined.with_columns(pl.col(entries).fill_null(pl.lit([], dtype=_ENTRIES)).cast(MAP_DTYPE).alias("tags")).drop(entries)
    texts = pl.concat([lookup.select("tags", pl.col(entries).cast(_ENTRIES)), pl.DataFrame(schema={"tags": pl.String, entries: _ENTRIES}, data=[[None], [None]])])
    texts = texts.select(pl.col("tags").alias("_text"), pl.col(entries).fill_null(pl.lit([], dtype=_ENTRIES)).cast(MAP_DTYPE).alias("tags"))
    texts = texts.with_columns(tag_set=tag_set_hash(), _check=tag_set_hash(seed=2))
    maps.append(texts.select("tag_set", pl.col("_check").alias("check"), "tags"))
    hashes = texts.lazy().select(pl.col("_text").alias("tags"), "tag_set", "_check")
    return frame.join(hashes, on="tags", how="left", nulls_equal=True, maintain_order="left").with_columns(tags=pl.lit(None, MAP_DTYPE))


VALUES_KEY = "_values"  # a row's :func:`values_key`, as a column


def values_key(on: list[str]) -> pl.Expr:
    """A 64-bit hash of a row's values of columns ``on`` (what :func:`join_on_values` joins on)."""
    return functools.reduce(operator.xor, [pl.col(c).hash(seed=i) for i, c in enumerate(on)])


def keys_distinct(table: pl.DataFrame, on: list[str]) -> bool:
    """Whether no two rows of ``table`` share the :func:`values_key` of their ``on`` values."""
    return not table.select(values_key(on).is_duplicated().any()).item()


def join_on_key(lines: pl.LazyFrame, table: pl.DataFrame, on: list[str]) -> pl.LazyFrame:
    """``lines``, which carry their :data:`VALUES_KEY` instead of their ``on`` values, left-joined (in
    their order) with ``table`` (:func:`keys_distinct` over ``on``) on that key."""
    keyed = table.lazy().with_columns(values_key(on).alias(VALUES_KEY)).drop(on)
    return lines.join(keyed, on=VALUES_KEY, how="left", maintain_order="left").drop(VALUES_KEY)


def join_on_values(lines: pl.LazyFrame, table: pl.DataFrame, on: list[str]) -> pl.LazyFrame:
    """``lines`` left-joined (in their order, nulls equal) with ``table``, whose ``on`` values are distinct:
    on a 64-bit hash of the values, unless two rows of ``table`` share it, then on the values, so a line
    never gets another row's columns. 10 M lines joined on six tag columns took 0.7 s, on the strings
    1.5 s (a legacy CUR day's ingest 1 s faster); a GCP day's on two label lists: as fast, 0.05-0.09 GiB
    less."""
    if keys_distinct(table, on):
        return join_on_key(lines.with_columns(values_key(on).alias(VALUES_KEY)), table, on)
    return lines.join(table.lazy(), on=on, how="left", nulls_equal=True, maintain_order="left")
