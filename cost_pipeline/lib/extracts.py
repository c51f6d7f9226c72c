"""Prometheus extracts parsed into the usage tables (``lib/usage.py``): samples and series' labels.

Input is the raw body of ``/api/v1/query_range`` (``resultType: matrix``), whether it was read
from an extract file or archived from a live Prometheus, so a day can always be recomputed from
exactly what was used; or, for pod-level extracts, the body's series one per line (NDJSON).

Memory: Polars' JSON reader holds a whole document, at about 13 times its size (a 282 MB body of
20,000 pods at 5-minute steps: 3.7 GiB). Bodies larger than :data:`STREAM_DOCUMENTS_ABOVE` are
streamed instead: ijson's C parser writes their series one per line, one series in memory at a
time, and the lines are sunk like an NDJSON extract (0.4 GiB for the same body, whatever its size).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ijson
import orjson
import polars as pl

from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.storage import Storage
from cost_pipeline.lib.usage import POINTS_SCHEMA, SAMPLES_SCHEMA, SERIES_SCHEMA, empty_parts, join_parts

_ENTRIES = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))  # a labels map's physical form


def parse_query_range(body: dict | bytes | str, query: str, day: dt.date, source: str) -> pl.DataFrame:
    """One query's response as samples of ``day`` (samples outside the UTC day, NaN and ±Inf are dropped)."""
    return join_parts(*parse_query_range_parts(body, query, day, source))


def parse_query_range_parts(body: dict | bytes | str, query: str, day: dt.date, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One query's response as (samples without labels, one row of labels per series).

    Parsed by Polars' JSON reader and exploded column-wise: no Python loop over samples, so 20,000
    pods at 5-minute steps (5.8 M samples a query) stay a matter of seconds. Labels are built once
    per series, not per sample.
    """
    raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    try:
        frame = pl.read_json(io.BytesIO(raw), infer_schema_length=None)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad extract, reported by name
        raise InputError(source, f"not a JSON object: {str(exc).splitlines()[0][:200]}") from None
    if "status" not in frame.columns or frame["status"][0] != "success":
        error = frame["error"][0] if "error" in frame.columns else "no error given"
        raise InputError(source, f"Prometheus status {frame['status'][0] if 'status' in frame.columns else None!r}: {error}")
    data_type = frame.schema.get("data")
    fields = {f.name: f.dtype for f in data_type.fields} if isinstance(data_type, pl.Struct) else {}
    result_type = frame.select(pl.col("data").struct.field("resultType")).item() if "resultType" in fields else None
    if result_type != "matrix":
        raise InputError(source, f"expected resultType 'matrix' (a query_range response), got {result_type!r}")
    result_dtype = fields.get("result")
    if not isinstance(result_dtype, pl.List) or not isinstance(result_dtype.inner, pl.Struct):
        return empty_parts()
    return _series_parts(frame.select(pl.col("data").struct.field("result")).explode("result").unnest("result"), query, day, source)


# documents up to this size are parsed in memory (faster: three bodies of 146-282 MB in 18.7 s against
# 32.6 s streamed, but at ~13 bytes of memory per byte of JSON), larger ones streamed (module docstring)
STREAM_DOCUMENTS_ABOVE = 32 * 2**20


def document_series_lines(path: Path, lines: Path) -> Path | None:
    """The series of the ``query_range`` body at ``path`` written one per line to ``lines`` (what
    ``jq -c '.data.result[]'`` makes of it) by ijson's C parser: one series held at a time, Python
    touching each series, never a sample. None (and no file) for a body that is not JSON or not a
    successful ``matrix`` response: :func:`sink_document` then parses it in memory for the error."""
    try:
        if body_field(path, "status") != "success" or body_field(path, "data.resultType") != "matrix":
            return None
        with path.open("rb") as body, lines.open("wb") as out:
            for series in ijson.items(body, "data.result.item", use_float=True):
                out.write(orjson.dumps(series))  # half the time of json.dumps
                out.write(b"\n")
        return lines
    except (ijson.JSONError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
        lines.unlink(missing_ok=True)
        return None


def sink_document(path: Path, query: str, day: dt.date, source: str, target: Path, lines: Path | None) -> pl.DataFrame:
    """A ``query_range`` body (see :func:`parse_query_range_parts`) parsed while streaming from its
    series ``lines`` (:func:`document_series_lines`, deleted here): its samples sunk to ``target``, its
    series' labels returned, the same as parsed in memory. Without lines, or if they do not read, the
    body is parsed in memory for the error naming the file and the problem (or, should it parse there
    after all, for its samples)."""
    try:
        if lines is None:
            raise ValueError("not a successful matrix response")
        return sink_series_lines(lines, query, day, source, target)
    except (ValueError, InputError):
        target.unlink(missing_ok=True)  # samples of a body that then fails are never staged
        points, series = parse_query_range_parts(path.read_bytes(), query, day, source)
        points.write_parquet(target)
        return series
    finally:
        if lines is not None:
            lines.unlink(missing_ok=True)


def body_field(path: Path, prefix: str):
    """A JSON body's value at ``prefix`` (e.g. ``status``, ``data.resultType``), read up to it
    (Prometheus writes both before the result), or None; ijson.JSONError if it is not JSON."""
    with path.open("rb") as body:
        return next(ijson.items(body, prefix), None)


def parse_series_lines(raw: bytes, query: str, day: dt.date, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """An extract written as NDJSON, one series per line (``{"metric": {...}, "values": [[t, "v"], ...]}``,
    what ``jq -c '.data.result[]'`` makes of a ``query_range`` body), parsed in memory: what
    :func:`sink_series_lines` falls back to for the exact error of a bad file."""
    if not raw.strip():
        return empty_parts()
    try:
        frame = pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad extract, reported by name
        raise InputError(source, f"not one JSON object per line: {str(exc).splitlines()[0][:200]}") from None
    missing = {"metric", "values"} - set(frame.columns)
    if missing:
        raise InputError(source, f"each line is a series with 'metric' and 'values'; missing {sorted(missing)}")
    return _series_parts(frame, query, day, source)


# a series line as read while streaming: the labels kept as JSON text (decoded once per series, so
# a label seen on one line of 20,000 is never missed by a schema inferred from the first lines)
_SERIES_LINE = {"metric": pl.String(), "values": pl.List(pl.List(pl.String()))}


def sink_series_lines(path: Path, query: str, day: dt.date, source: str, target: Path) -> pl.DataFrame:
    """An NDJSON extract (see :func:`parse_series_lines`) parsed while streaming: its samples are sunk
    to ``target`` (``POINTS_SCHEMA``), its series' labels returned. Polars' NDJSON reader holds every
    line's values at once (a 282 MB extract of 20,000 pods: 1.7 GiB); streamed, it stays at ~0.4 GiB.
    A file that does not read this way (bad JSON, values or labels of the wrong shape, a bad sample)
    is parsed in memory for the error naming the file and the problem."""
    lines = pl.scan_ndjson(path, schema=_SERIES_LINE).with_row_index("series").with_columns(pl.col("series").cast(pl.Int64))
    pairs = _pairs(lines.select("series", "values").explode("values").drop_nulls("values"))
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    bad = target.with_name(target.name + ".bad")  # not *.parquet: never another query's samples (a query named "x.bad")
    try:
        # the samples and the first bad one (if any) in one pass; more sinks on the same scan made it 1.7x slower
        pl.collect_all([
            pairs.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < start + 86400) & pl.col("value").is_finite())
            .with_columns(date=pl.lit(day), query=pl.lit(query)).select(list(POINTS_SCHEMA)).sink_parquet(target, lazy=True),
            pairs.filter(pl.col("timestamp").is_null() | pl.col("value").is_null()).head(1).sink_parquet(bad, lazy=True),
        ], engine="streaming")
        # the labels: a second pass that decodes only them (1.5 s for 282 MB)
        metric = pl.scan_ndjson(path, schema={"metric": pl.String()}).with_row_index("series").collect(engine="streaming")
        if metric.height and (not pl.scan_parquet(target).head(1).collect().height or metric["metric"].is_null().all()):
            raise ValueError("series without a sample of the day, or without labels")  # the in-memory parse says which
        if pl.read_parquet(bad).height:
            raise ValueError("a bad sample")
        decoded = metric.with_columns(pl.col("series").cast(pl.Int64), metric["metric"].str.json_decode(infer_schema_length=None)) if metric.height else None
        if decoded is not None and not isinstance(decoded.schema["metric"], pl.Struct | pl.Null):
            raise ValueError("labels that are not objects")
    except (pl.exceptions.PolarsError, ValueError):
        points, series = parse_series_lines(path.read_bytes(), query, day, source)  # raises, naming the problem
        points.write_parquet(target)
        return series
    finally:
        bad.unlink(missing_ok=True)
    return _labels(decoded, query, day) if decoded is not None else empty_parts()[1]


def _pairs(exploded: pl.LazyFrame, raw: bool = False) -> pl.LazyFrame:
    """Exploded ``[timestamp, "value"]`` pairs as numbers (null where a pair is not two numbers);
    ``raw``: with each pair as delivered (to name a bad one)."""
    return exploded.select("series", *(["values"] if raw else []),
                           *(pl.col("values").list.get(i, null_on_oob=True).cast(pl.Float64, strict=False).alias(name)
                             for i, name in enumerate(("timestamp", "value"))))


def _labels(series: pl.DataFrame, query: str, day: dt.date) -> pl.DataFrame:
    """One row of labels (a map, without ``__name__``) per series row (``series``, ``metric`` struct)."""
    metric = series.schema.get("metric")
    names = [f.name for f in metric.fields if f.name != "__name__"] if isinstance(metric, pl.Struct) else []
    entries = [pl.struct(key=pl.lit(n), value=pl.col("metric").struct.field(n).cast(pl.String)) for n in sorted(names)]
    return series.select(
        "series",
        (pl.concat_list(entries).list.eval(pl.element().filter(pl.element().struct.field("value").is_not_null()))
         if entries else pl.lit([], dtype=_ENTRIES)).cast(_ENTRIES).cast(SAMPLES_SCHEMA["labels"]).alias("labels"),
    ).with_columns(date=pl.lit(day), query=pl.lit(query)).select(list(SERIES_SCHEMA))


def _series_parts(series: pl.DataFrame, query: str, day: dt.date, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Series rows (``metric``, ``values``) as (samples, labels)."""
    series = series.with_row_index("series").with_columns(pl.col("series").cast(pl.Int64))
    inner = dict(series.schema)
    metric, values = inner.get("metric"), inner.get("values")
    if metric is not None and not isinstance(metric, pl.Struct | pl.Null):
        raise InputError(source, f"a series' metric must be an object of labels, not {metric}")
    if values is not None and not (isinstance(values, pl.List) and isinstance(values.inner, pl.List | pl.Null)):
        raise InputError(source, f'a series\' values must be [[timestamp, "value"], ...], not {values}')
    labels = _labels(series.select("series", *(["metric"] if metric is not None else [])), query, day)
    if "values" not in inner:
        return empty_parts()
    # exploded while streaming, without keeping each sample's raw pair (11.5 M of them for 20,000 pods),
    # which is looked up again only to name a bad sample
    exploded = series.lazy().select("series", pl.col("values").cast(pl.List(pl.List(pl.String)))).explode("values").drop_nulls("values")
    points = _pairs(exploded).collect(engine="streaming")
    if points.select(pl.any_horizontal(pl.col("timestamp", "value").is_null()).any()).item():
        bad = _pairs(exploded, raw=True).filter(pl.col("timestamp").is_null() | pl.col("value").is_null()).head(1).collect()
        raise InputError(source, f"series {bad['series'][0]}: bad sample {bad['values'][0].to_list()!r}")
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    kept = points.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < start + 86400) & pl.col("value").is_finite())
    return kept.with_columns(date=pl.lit(day), query=pl.lit(query)).select(list(POINTS_SCHEMA)), labels


def read_extracts(root: str | Path, day: dt.date, storage: Storage | None = None) -> pl.DataFrame:
    """Every ``<root>/date=YYYY-MM-DD/<query>.json`` of the day (local, s3:// or gs://); a missing
    day folder is no usage."""
    return join_parts(*read_extracts_parts(root, day, storage))


def read_extracts_parts(root: str | Path, day: dt.date, storage: Storage | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`read_extracts` as (samples, series labels), the way the lake stores them."""
    with tempfile.TemporaryDirectory() as work:
        points, series = stage_extracts(root, day, Path(work), storage)
        return points.collect(), series


def stage_extracts(root: str | Path, day: dt.date, work: Path, storage: Storage | None = None,
                   stream_above: int = STREAM_DOCUMENTS_ABOVE) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """Every extract of the day parsed and its samples written to a file under ``work``; returns a scan
    of the samples (documents first, then series-per-line extracts, each in listing order) and the
    series' labels. The day's samples are never held at once: the lake's day is sunk from the scan.
    Documents larger than ``stream_above`` bytes are streamed (:func:`sink_document`)."""
    storage = storage or Storage()
    folder = f"{str(root).rstrip('/')}/date={day.isoformat()}"
    extracts = [s for s in storage.list(folder) if s.name.endswith((".json", ".ndjson")) and "/" not in s.name]
    by_query: dict[str, list[str]] = {}
    for stored in extracts:
        by_query.setdefault(stored.name.rsplit(".", 1)[0], []).append(stored.uri)
    for query, uris in by_query.items():
        if len(uris) > 1:
            raise InputError(" and ".join(sorted(uris)), f"two extracts of query {query!r} for {day}: keep one")
    local = [Extract(s.name.rsplit(".", 1)[0], storage.fetch(s), s.uri, s.size) for s in extracts]
    return stage_local_extracts(local, day, work, stream_above)


@dataclass(frozen=True)
class Extract:
    """One query's extract as a local file: a ``query_range`` body (``.json``) or its series one per
    line (``.ndjson``); ``source`` names it in errors (its URI, or the lake's archive)."""

    query: str
    path: Path
    source: str
    size: int

    @property
    def series_lines(self) -> bool:
        return self.path.name.endswith(".ndjson")


def stage_local_extracts(extracts: list[Extract], day: dt.date, work: Path,
                         stream_above: int = STREAM_DOCUMENTS_ABOVE) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """:func:`stage_extracts` of extracts already on local disk (one per query)."""
    work.mkdir(parents=True, exist_ok=True)

    def parse(extract: Extract) -> tuple[Path, pl.DataFrame]:
        target = work / f"{extract.query}.parquet"
        if extract.series_lines:
            return target, sink_series_lines(extract.path, extract.query, day, extract.source, target)
        points, series = parse_query_range_parts(extract.path.read_bytes(), extract.query, day, extract.source)
        points.write_parquet(target)
        return target, series

    # Polars' JSON reader runs one document on one core: documents parsed in memory go side by side;
    # streamed ones and series-per-line extracts use every core, one at a time
    documents = [e for e in extracts if not e.series_lines and e.size <= stream_above]
    with ThreadPoolExecutor(max_workers=min(len(documents), os.cpu_count() or 1) or 1) as pool:
        parsed = list(pool.map(parse, documents))
    # larger documents: ijson writes the next one's series lines (holding the GIL) while Polars, which
    # releases it, sinks the current one's
    large = {work / f"{e.query}.json.lines": e for e in extracts if not e.series_lines and e.size > stream_above}
    writer = ThreadPoolExecutor(max_workers=1)
    written = [writer.submit(document_series_lines, e.path, lines) for lines, e in large.items()]
    try:
        for extract, lines in zip(large.values(), written):
            target = work / f"{extract.query}.parquet"
            parsed.append((target, sink_document(extract.path, extract.query, day, extract.source, target, lines.result())))
    finally:  # a bad document: the others are not written on (nor their lines left behind)
        writer.shutdown(wait=True, cancel_futures=True)
        for lines in large:
            lines.unlink(missing_ok=True)
    parsed += [parse(e) for e in extracts if e.series_lines]
    if not parsed:
        return pl.LazyFrame(schema=POINTS_SCHEMA), empty_parts()[1]
    return pl.scan_parquet([path for path, _ in parsed]), pl.concat([series for _, series in parsed])
