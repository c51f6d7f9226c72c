"""Prometheus' own compact ``query_range`` bodies split into samples by their byte patterns.

Prometheus writes a matrix answer compactly and always alike: ``{"status":"success","data":
{"resultType":"matrix","result":[{"metric":{...},"values":[[t,"v"],...]},...]}}``. Building every
sample's Python objects to parse it (``lib/series_lines.py``'s converter, ijson) took 10.4 s of one
core for the 282 MB body of 20,000 pods' requests. Here Python touches each series, never a sample:
the body is read in chunks of whole series (so memory does not grow with the body: 0.3 GiB for that
one), each series' labels are read by orjson, and its samples' text is handed to Polars' CSV reader as
it stands: lines end at ``[`` and fields at quotes, so ``t,"v"],[`` is a line of three fields (the
timestamp and its comma, the value, ``],``), and each series' last line ends in ``]},`` (written
after it), which numbers the series. Python neither copies nor rewrites a series' samples: the
split held the GIL for more than half its time when each series' ``],[`` were replaced by newlines
(bytes.replace, 0.5 s of the 282 MB body), so three bodies side by side waited on each other (3.6-3.9 s
against 3.0-3.4 s so, old and new in turn, the same samples and labels). The samples are staged as Arrow IPC for the day's sink.

Only what can be read exactly this way is taken: the byte patterns that cut series from series and
labels from values (``},{"metric":``, ``},"values":[``) hold an unescaped quote, so they never occur
inside a label (a quote in a JSON string is always escaped); within the values every line must be a
JSON number and its comma, a value the reader takes as a number, and ``],`` (or the series' close,
as many as series), so a value holding a cut or a quote, a timestamp in quotes or a value without
them leaves a line of other fields and the body is refused. A body laid out otherwise (whitespace,
keys in another order, a third field in a series), a label that is not text, a sample that is not
``[number, "value"]``, or a value that is not a number gives None, and the caller takes the
converter's path, which reads any JSON and names what is wrong. Exactly the converter's samples and
labels: the timestamps are JSON numbers (checked) cast to floats, and each value is read as the number
Polars casts its text to on that path (11,536 spellings of Prometheus' characters compared).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from cost_pipeline.lib.series_lines import labels_text
from cost_pipeline.lib.usage import of_day

HEAD = b'{"status":"success","data":{"resultType":"matrix","result":['
END = b"]}}"
METRIC = b'{"metric":'
VALUES = b'},"values":'
BETWEEN = {False: b'},{"metric":', True: b'}\n{"metric":'}  # series after series: in a body, in series lines
CLOSE = b"]},["  # written after each series' samples, read as the end of its last line
KEPT = b'0123456789.eE+-,"NaInf[]}'  # what the samples' text may hold: numbers, quotes, NaN, +Inf, -Inf, the cuts
TIMESTAMP = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?,$"  # a JSON number, then the pair's comma
CHUNK_BYTES = 16 << 20  # whole series read at a time (20,000 pods' 282 MB body: 18 chunks, 0.3 GiB)


# The split's samples (``series``, ``timestamp``, ``value``; the query and day are the caller's) are
# read once, by the day's sink: staged as LZ4-compressed Arrow IPC, which writes at nearly the speed
# of a copy, where Parquet encoded them (the 282 MB body's 11.5 M samples: 0.15 s against 0.9-1.2 s).
SAMPLES_SCHEMA = pa.schema([("series", pa.int64()), ("timestamp", pa.float64()), ("value", pa.float64())])
STAGED = pa.ipc.IpcWriteOptions(compression="lz4")


class _NotCompact(Exception):
    """The body is not laid out as Prometheus writes it: the caller takes the converter's path."""


def split_body(path: Path, samples: Path, day: dt.date, lines: bool = False, chunk_bytes: int = CHUNK_BYTES) -> pl.DataFrame | None:
    """The series of the compact body at ``path`` (``lines``: of series lines, one compact series per
    line): their labels returned (``line``, the series' position; ``labels``, as the converter writes
    them), their samples of ``day`` written to ``samples`` (Arrow IPC of :data:`SAMPLES_SCHEMA`, ``series``
    the position; outside the UTC day, NaN and ±Inf dropped, as every reader does). None, and no file,
    for anything else (module docstring), or a body that cannot be read (the converter then names why)."""
    try:
        with path.open("rb") as body, pa.OSFile(str(samples), "wb") as out, pa.ipc.new_file(out, SAMPLES_SCHEMA, options=STAGED) as writer:
            labels: list[str] = []
            for chunk, end in _chunks(body, lines, chunk_bytes):
                chunk_labels, points = _chunk(chunk, end, len(labels), BETWEEN[lines])
                labels += chunk_labels
                if points is not None:
                    writer.write_table(points.filter(of_day(day)).to_arrow())
        return pl.DataFrame({"line": range(len(labels)), "labels": labels}, schema={"line": pl.Int64, "labels": pl.String})
    except (_NotCompact, pl.exceptions.PolarsError, orjson.JSONDecodeError, OSError):  # e.g. a CSV line of three fields
        samples.unlink(missing_ok=True)
        return None


def _chunks(body: BinaryIO, lines: bool, chunk_bytes: int) -> Iterator[tuple[bytearray, int]]:
    """``body``'s series region cut after whole series, about ``chunk_bytes`` at a time, as (a buffer,
    the chunk's end in it), the buffer valid until the next chunk (read, not mapped: a mapped body's
    pages counted in the process' memory, 0.3 GiB more for a 282 MB body)."""
    last = max(0, body.seek(0, os.SEEK_END) - 256)
    body.seek(last)
    tail = body.read().rstrip()
    start, end = 0, last + len(tail)  # trailing whitespace left out
    body.seek(0)
    if not lines:
        if body.read(len(HEAD)) != HEAD or not tail.endswith(END):
            raise _NotCompact
        start, end, tail = len(HEAD), end - len(END), tail[:-len(END)]
    if start >= end:
        return
    if body.read(len(METRIC)) != METRIC or not tail.endswith(b"}"):
        raise _NotCompact
    body.seek(start)
    # one buffer for every chunk, read into (a new block for each read, joined to the series cut off
    # before it, then cut again: 0.27 s of copies for the 282 MB body)
    between, buffer, held = BETWEEN[lines], bytearray(), 0  # held: the start of a series cut off at the buffer's start
    while start < end:
        size = held + min(chunk_bytes, end - start)
        if len(buffer) < size:
            buffer.extend(bytes(size - len(buffer)))
        with memoryview(buffer) as view:
            read = body.readinto(view[held:size])
        if not read:
            raise _NotCompact  # the file changed while it was read
        start, size = start + read, held + read
        cut = size - 1 if start >= end else buffer.rfind(between, 0, size)
        if cut < 0:  # a series longer than the chunk: read on
            held = size
            continue
        yield buffer, cut + 1
        held = size - cut - 2  # past the comma (or newline) between two series
        buffer[:held] = buffer[cut + 2:size]


def _chunk(chunk: bytearray, end: int, first: int, between: bytes) -> tuple[list[str], pl.DataFrame | None]:
    """The series of ``chunk[:end]``: their labels, and their samples (``series``, ``timestamp``,
    ``value``; series numbered from ``first``), None if none has any."""
    labels, regions, full = [], [], []  # full: the series that have samples
    at = 0
    with memoryview(chunk) as view:
        try:
            while at < end:
                cut = chunk.find(between, at, end)
                stop = end if cut < 0 else cut + 1  # the series is chunk[at:stop], '{"metric":...}'
                split = chunk.find(VALUES, at, stop)
                if not chunk.startswith(METRIC, at) or split < 0:
                    raise _NotCompact
                metric = orjson.loads(view[at + len(METRIC):split + 1])
                if not isinstance(metric, dict) or not all(isinstance(v, str) for v in metric.values()):
                    raise _NotCompact
                values = split + len(VALUES)
                if chunk.startswith(b"[[", values) and chunk.startswith(b"]]}", stop - 3) and stop - values > 5:
                    regions.append(view[values + 2:stop - 3])  # t,"v"],[t,"v"],...,[t,"v"
                    full.append(len(labels))
                elif stop - values != 3 or chunk[values:stop] != b"[]}":
                    raise _NotCompact
                labels.append(labels_text(metric))
                at = stop + 1
            text = CLOSE.join([*regions, b""])  # each series' samples closed by CLOSE
        finally:
            regions.clear()  # the views released: the caller reuses the buffer
    if not full:
        return labels, None
    if text.translate(None, KEPT):  # a backslash or space, say: not [number, "value"] pairs
        raise _NotCompact
    # (a value that is no number, or a line of more fields, fails the read: PolarsError)
    read = pl.read_csv(text, has_header=False, separator='"', quote_char=None, eol_char="[", new_columns=["t", "value", "end"],
                       schema={"t": pl.String, "value": pl.Float64, "end": pl.String})
    last = pl.col("end") == CLOSE[:-1].decode()
    # (every line's end, a missing one too: a value holding "[" leaves a line of two fields)
    checks = read.select(last.sum().alias("series"), (last | (pl.col("end") == "],")).all(ignore_nulls=False).alias("ends"),
                         pl.col("value").null_count(), pl.col("t").unique().str.contains(TIMESTAMP).all())  # (a day has a few hundred steps)
    if checks.row(0) != (len(full), True, 0, True):
        raise _NotCompact  # a timestamp that is no JSON number, a missing value, a cut inside a value: the converter's path names it
    ordinal = last.shift(1, fill_value=False).cast(pl.Int64).cum_sum()  # of the series with samples
    series = ordinal + first if len(full) == len(labels) else pl.lit(pl.Series(np.asarray(full, dtype=np.int64) + first)).gather(ordinal)
    return labels, read.select(series.alias("series"), pl.col("t").str.head(-1).cast(pl.Float64).alias("timestamp"), "value")
