"""Prometheus extracts parsed into the usage tables (``lib/usage.py``): samples and series' labels.

Input is the raw body of ``/api/v1/query_range`` (``resultType: matrix``), whether it was read
from an extract file or archived from a live Prometheus, so a day can always be recomputed from
exactly what was used; or, for pod-level extracts, the body's series one per line (NDJSON).

Memory: Polars' JSON reader holds a whole document, at about 13 times its size (a 282 MB body of
20,000 pods at 5-minute steps: 3.7 GiB), and its NDJSON reader every line's samples. Extracts larger
than :data:`STREAM_DOCUMENTS_ABOVE` (either form) are streamed instead, a chunk of whole series at a
time (0.3-0.4 GiB for the same body, whatever its size). A body laid out as Prometheus writes it is
split by its byte patterns (``lib/compact_matrix.py``: its samples parsed by Polars' CSV reader); any
other is rewritten one series per line by converter processes (``lib/series_lines.py``, one per
core, ijson: 3-4 times as long), and Polars sinks its samples from those lines. Input the converter
does not take (anything but a successful matrix of ``[t, "v"]`` pairs with text labels) is parsed in
memory, for the error naming the problem or, should it parse there, for its samples.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cost_pipeline.lib import series_lines
from cost_pipeline.lib.compact_matrix import split_body
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.memory import reusing_freed_memory
from cost_pipeline.lib.storage import Storage
from cost_pipeline.lib.usage import POINTS_SCHEMA, SAMPLES_SCHEMA, SERIES_SCHEMA, empty_parts, join_parts, of_day

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


# documents up to this size are parsed in memory, larger ones streamed (module docstring): in memory
# at ~13 bytes per byte of JSON and one core a document, streamed at ~0.4 GiB whatever the size plus one
# converter process per core. Three bodies of 14-28 MB: 1.4-1.8 s either way; of 146-282 MB: 14-17 s
# streamed against 20 s in memory at 3.9 GiB; of 0.4-0.7 MB: 0.06 s in memory, 0.2 s streamed
STREAM_DOCUMENTS_ABOVE = 16 * 2**20


def convert_document(path: Path, lines: Path) -> Path | None:
    """:func:`lib.series_lines.document_series_lines` in a process of its own (see that module): the
    lines, or None for input it does not take (not a successful matrix of pairs with text labels)."""
    done = subprocess.run([sys.executable, "-m", series_lines.__name__, str(path), str(lines)], capture_output=True, text=True)
    if done.returncode == series_lines.NOT_A_MATRIX:
        return None
    if done.returncode:
        lines.unlink(missing_ok=True)
        said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]  # e.g. -9: killed for memory
        raise RuntimeError(f"{path}: writing its series one per line failed: {said}")
    return lines


@dataclass(frozen=True)
class SplitBody:
    """A body split by :func:`lib.compact_matrix.split_body`: its series' labels, and the file holding
    its samples of the day (Arrow IPC: ``series``, the series' position in the body, ``timestamp``,
    ``value``; see :func:`lib.compact_matrix.split_body`)."""

    labels: pl.DataFrame
    samples: Path


def split_or_convert(body: Path, lines: Path, samples: Path, day: dt.date, series_lines: bool) -> SplitBody | Path | None:
    """A body to be streamed, split if it is laid out as Prometheus writes it, else converted to series
    lines by :func:`convert_document` (None: neither takes it)."""
    labels = split_body(body, samples, day, lines=series_lines)
    return SplitBody(labels, samples) if labels is not None else convert_document(body, lines)


# how an extract was read, for the usage asset's metadata: a body converted or parsed in memory
# although large is one an operator may want written as Prometheus writes it (3-4 times as fast)
SPLIT, CONVERTED, IN_MEMORY = "split", "converted to series lines", "in memory"


def sink_extract(extract: Extract, day: dt.date, target: Path, bodies: list[SplitBody | Path | None],
                 how: dict[str, str] | None = None) -> tuple[Path, pl.DataFrame]:
    """An extract parsed while streaming from its ``bodies`` (:func:`split_or_convert` of each, whose
    files are deleted here): its samples staged at ``target`` (or beside it, see
    :func:`sink_series_lines`), the file and its series' labels returned, the same as parsed in memory.
    If a body was taken by neither, or its lines do not read, the extract is parsed in memory for the
    error naming the file and the problem (or, should it parse there after all, for its samples).
    ``how``: the way it was read, by query."""
    how = {} if how is None else how
    try:
        if None in bodies:
            raise ValueError("not series of [timestamp, value] pairs")
        series, staged = sink_series_lines(bodies, extract.query, day, target)
        how[extract.query] = SPLIT if all(isinstance(b, SplitBody) for b in bodies) else CONVERTED
        return staged, series
    except (ValueError, pl.exceptions.PolarsError):
        for staged in (target, target.with_suffix(".arrow")):  # samples of an extract that then fails are never staged
            staged.unlink(missing_ok=True)
        parse = parse_series_lines if extract.series_lines else parse_query_range_parts
        points, series = parse(extract.read(), extract.query, day, extract.source)
        points.write_parquet(target)
        how[extract.query] = IN_MEMORY
        return target, series
    finally:
        for body in bodies:
            if body is not None:
                (body.samples if isinstance(body, SplitBody) else body).unlink(missing_ok=True)


def parse_series_lines(raw: bytes, query: str, day: dt.date, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """An extract written as NDJSON, one series per line (``{"metric": {...}, "values": [[t, "v"], ...]}``,
    what ``jq -c '.data.result[]'`` makes of a ``query_range`` body), parsed in memory: what
    :func:`sink_extract` falls back to for the exact error of a bad file."""
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


def sink_series_lines(bodies: list[SplitBody | Path], query: str, day: dt.date, target: Path) -> tuple[pl.DataFrame, Path]:
    """Bodies split (:class:`SplitBody`) or converted to series lines by :func:`convert_document` (a
    file per body) parsed while streaming: their samples are sunk to ``target`` (``POINTS_SCHEMA``), or,
    one body split, kept as the split staged them, beside it (``.arrow``, read by :func:`scan_staged`);
    returns their labels and the file. Polars' NDJSON reader holds every line's values at once (the
    282 MB extract of 20,000 pods: 1.7 GiB); streamed, it stays at ~0.4 GiB. Several bodies (a day's windows) are
    stitched: one series per label set, numbered in order of first appearance, as :func:`stitched_body`
    does in memory. ValueError (or Polars' error) for lines that do not read this way, e.g. a bad
    sample (the caller then parses the extract in memory, which names the problem)."""
    if len(bodies) == 1 and isinstance(bodies[0], SplitBody):  # its samples are the extract's
        staged = bodies[0].samples.replace(target.with_suffix(".arrow"))
        return _labels_of_lines(bodies[0].labels.rename({"line": "series"}), query, day), staged
    parts = [_body_parts(body) for body in bodies]
    firsts = [0, *itertools.accumulate(labels.height for labels, _ in parts)][:-1]  # each body's first line
    labels = pl.concat([labels.with_columns(pl.col("line") + first) for (labels, _), first in zip(parts, firsts, strict=True)])
    values = pl.concat([samples.with_columns(pl.col("line") + first) for (_, samples), first in zip(parts, firsts, strict=True)])
    if len(bodies) > 1:
        each_line = labels.join(labels.unique("labels", keep="first", maintain_order=True).with_row_index("series").drop("line"),
                                on="labels", maintain_order="left")
        labels = each_line.unique("series", keep="first", maintain_order=True)
        values = values.join(each_line.lazy().select("line", "series"), on="line", maintain_order="left")
    else:
        labels, values = (frame.with_columns(series=pl.col("line")) for frame in (labels, values))
    samples = values.select(pl.col("series").cast(pl.Int64), "timestamp", "value")
    bad = target.with_name(target.name + ".bad")  # not *.parquet: never another query's samples (a query named "x.bad")
    try:
        # the samples and the first bad one (if any) in one pass; more sinks on the same scan made it 1.7x slower
        pl.collect_all([
            samples.filter(of_day(day))
            .with_columns(date=pl.lit(day), query=pl.lit(query)).select(list(POINTS_SCHEMA)).sink_parquet(target, lazy=True),
            samples.filter(pl.col("timestamp").is_null() | pl.col("value").is_null()).head(1).sink_parquet(bad, lazy=True),
        ], engine="streaming")
        if pl.read_parquet(bad).height:
            raise ValueError("a bad sample")
    finally:
        bad.unlink(missing_ok=True)
    return _labels_of_lines(labels, query, day), target


def _body_parts(body: SplitBody | Path) -> tuple[pl.DataFrame, pl.LazyFrame]:
    """A body's labels (``line``, ``labels``) and every sample (``line``, ``timestamp``, ``value``; a null
    where a sample is bad). Each pass over series lines declares only the fields it reads: Polars'
    reader decodes every declared one."""
    if isinstance(body, SplitBody):
        return body.labels, pl.scan_ipc(body.samples).select(pl.col("series").alias("line"), "timestamp", "value")
    # the labels first (a pass that decodes only them), then each line's samples
    labels = pl.scan_ndjson(body, schema={"labels": pl.String()}).with_row_index("line").collect(engine="streaming")
    values = pl.scan_ndjson(body, schema={"t": pl.List(pl.Float64()), "v": pl.List(pl.String())}).with_row_index("line")
    return labels.with_columns(pl.col("line").cast(pl.Int64)), values.select(pl.col("line").cast(pl.Int64), "t", "v").explode(
        "t", "v", keep_nulls=False).select("line", pl.col("t").alias("timestamp"), pl.col("v").cast(pl.Float64, strict=False).alias("value"))


def _labels_of_lines(labels: pl.DataFrame, query: str, day: dt.date) -> pl.DataFrame:
    """Series' labels as written in series lines (``series``, ``labels`` JSON text) as the lake keeps them."""
    not_name = pl.element().struct.field("key") != "__name__"
    return labels.select(pl.col("series").cast(pl.Int64), pl.col("labels").str.json_decode(dtype=_ENTRIES).list.filter(not_name)
                         .cast(SERIES_SCHEMA["labels"])).with_columns(date=pl.lit(day), query=pl.lit(query)).select(list(SERIES_SCHEMA))


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
    kept = points.filter(of_day(day))
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
                   stream_above: int = STREAM_DOCUMENTS_ABOVE, how: dict[str, str] | None = None) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """Every extract of the day parsed and its samples written to a file under ``work``; returns a scan
    of the samples (those parsed in memory first, then the streamed ones, each in listing order) and
    the series' labels. The day's samples are never held at once: the lake's day is sunk from the scan.
    Extracts larger than ``stream_above`` bytes are streamed (:func:`sink_extract`). ``how`` gets the
    way each query's extract was read (:data:`SPLIT`, :data:`CONVERTED`, :data:`IN_MEMORY`)."""
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
    return stage_local_extracts(local, day, work, stream_above, how)


@dataclass(frozen=True)
class Extract:
    """One query's extract as a local file: a ``query_range`` body (``.json``) or its series one per
    line (``.ndjson``); ``source`` names it in errors (its URI, or the lake's archive). ``windows``: a
    live day fetched in several windows, one body each (``path`` is the first), whose series are
    stitched by their label sets; ``size`` is then their total."""

    query: str
    path: Path
    source: str
    size: int
    windows: tuple[Path, ...] = ()

    @property
    def series_lines(self) -> bool:
        return self.path.name.endswith(".ndjson")

    @property
    def bodies(self) -> tuple[Path, ...]:
        return self.windows or (self.path,)

    def read(self) -> bytes:
        """The extract whole (the windows stitched into one body)."""
        return stitched_body(self.windows, self.source) if self.windows else self.path.read_bytes()


def stitched_body(windows: tuple[Path, ...], source: str) -> bytes:
    """Window bodies of one query as one body: each series' values in window order, series in order of
    first appearance, by their full label sets (``__name__`` included). In memory: for small days, and
    for the error of a day the streamed path did not take."""
    merged: dict[str, dict] = {}
    for window in windows:
        try:
            for series in json.loads(window.read_bytes())["data"]["result"]:
                key = json.dumps(series["metric"], sort_keys=True)
                merged.setdefault(key, {"metric": series["metric"], "values": []})["values"].extend(series["values"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise InputError(source, f"{window.name}: not a matrix answer ({type(exc).__name__}: {exc})") from None
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": list(merged.values())}}).encode()


def stage_local_extracts(extracts: list[Extract], day: dt.date, work: Path,
                         stream_above: int = STREAM_DOCUMENTS_ABOVE, how: dict[str, str] | None = None) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """:func:`stage_extracts` of extracts already on local disk (one per query)."""
    work.mkdir(parents=True, exist_ok=True)
    how = {} if how is None else how

    def parse(extract: Extract) -> tuple[str, Path, pl.DataFrame]:
        target = work / f"{extract.query}.parquet"
        parser = parse_series_lines if extract.series_lines else parse_query_range_parts
        points, series = parser(extract.read(), extract.query, day, extract.source)
        points.write_parquet(target)
        how[extract.query] = IN_MEMORY
        return extract.query, target, series

    # small extracts are parsed in memory (a converter process costs ~0.1 s to start), side by side:
    # Polars' JSON readers run one on one core
    small = [e for e in extracts if e.size <= stream_above]
    with ThreadPoolExecutor(max_workers=min(len(small), _cores()) or 1) as pool:
        parsed = list(pool.map(parse, small))
    # the others are split (or converted to series lines in processes of their own: ijson holds the
    # GIL), while Polars sinks the samples of those already done, in listing order. A split holds the
    # GIL for about 40 % of its time (each series' labels and samples' text cut in Python), so one body
    # per core left a core idle: one more than the cores. 20,000 pods' three bodies (146-282 MB) on two
    # cores: 5.3-5.7 s at 0.41 GiB with two threads, 4.6 s at 0.48-0.51 GiB with three
    streamed = [e for e in extracts if e.size > stream_above]
    lines = {e.query: [work / f"{e.query}.{i}.lines" for i in range(len(e.bodies))] for e in streamed}
    # (each split frees and takes again chunks of 16 MB and more: kept for reuse, not faulted in anew)
    with reusing_freed_memory(), ThreadPoolExecutor(max_workers=min(sum(map(len, lines.values())), _cores() + 1) or 1) as writer:
        written = {e.query: [writer.submit(split_or_convert, body, out, out.with_suffix(".samples"), day, e.series_lines)
                             for body, out in zip(e.bodies, lines[e.query], strict=True)] for e in streamed}
        try:
            for extract in streamed:
                target = work / f"{extract.query}.parquet"
                parsed.append((extract.query, *sink_extract(extract, day, target, [w.result() for w in written[extract.query]], how)))
        finally:  # a bad extract: the others are not written on (nor their lines left behind)
            writer.shutdown(wait=True, cancel_futures=True)
            for path in (path for paths in lines.values() for path in paths):
                path.unlink(missing_ok=True)
                path.with_suffix(".samples").unlink(missing_ok=True)
    if not parsed:
        return pl.LazyFrame(schema=POINTS_SCHEMA), empty_parts()[1]
    return pl.concat([scan_staged(path, query, day) for query, path, _ in parsed]), pl.concat([series for _, _, series in parsed])


def scan_staged(path: Path, query: str, day: dt.date) -> pl.LazyFrame:
    """An extract's staged samples as ``POINTS_SCHEMA``: Parquet as written, or a split body's Arrow IPC
    (see :class:`SplitBody`) with its query and day."""
    if path.suffix == ".arrow":
        return pl.scan_ipc(path).select(pl.lit(day).alias("date"), pl.lit(query).alias("query"), "series", "timestamp", "value")
    return pl.scan_parquet(path)


def _cores() -> int:
    """The cores this process may use: the size of Polars' thread pool, which ``POLARS_MAX_THREADS`` sets
    and which otherwise follows the process' CPU affinity and cgroup quota (Rust's available_parallelism),
    where ``os.cpu_count()`` counts a Kubernetes node's every core."""
    return pl.thread_pool_size()
