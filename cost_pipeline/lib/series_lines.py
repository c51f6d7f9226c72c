"""A ``query_range`` body's series written one per line, in a process of its own.

ijson's C parser builds each series' Python objects while holding the GIL, so converting the bodies
of a large cluster's day (three of 146-282 MB for 20,000 pods) ran on one core while Polars waited
for the lines: 22 s of a 30-35 s stage. Run as ``python -m cost_pipeline.lib.series_lines BODY
LINES``, one process per core converts a body each while the caller sinks those already written.
This module imports no Polars: a converter process holds one series at a time and little else.
Bodies laid out as Prometheus writes them are split instead, 3-4 times as fast
(``lib/compact_matrix.py``); this converter takes any other layout of valid JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ijson
import orjson

NOT_A_MATRIX = 3  # the exit status for input the converter does not take (see document_series_lines)


def document_series_lines(path: Path, lines: Path) -> Path | None:
    """The series of the ``query_range`` body at ``path`` (or, for a ``.ndjson`` extract, of its lines)
    written one per line to ``lines``: the labels as JSON text, the timestamps and values as two flat
    lists (``{"labels": "[...]", "t": [...], "v": [...]}``), one series held at a time, Python touching
    each series, never a sample. Apart, Polars reads a line's samples as two lists of scalars: 1.8 s
    for the 282 MB body's 11.5 M samples, against 8.7 s for its ``[t, "v"]`` pairs as lists of lists.
    None (and no file) for input that is not JSON, not a successful ``matrix`` response, or not series
    of ``[t, "v"]`` pairs with text labels: the caller then parses it in memory, for the error naming
    the problem or, should it parse there, for its samples."""
    try:
        if path.name.endswith(".ndjson"):
            with path.open("rb") as extract, lines.open("wb") as out:
                for line in extract:
                    if line.strip():
                        _write(orjson.loads(line), out)
            return lines
        if body_field(path, "status") != "success" or body_field(path, "data.resultType") != "matrix":
            return None
        with path.open("rb") as body, lines.open("wb") as out:
            for series in ijson.items(body, "data.result.item", use_float=True):
                _write(series, out)
        return lines
    except (ijson.JSONError, orjson.JSONDecodeError, orjson.JSONEncodeError, ValueError, TypeError, AttributeError):
        lines.unlink(missing_ok=True)  # e.g. a pair that is not [t, "v"], an integer beyond 64 bits
        return None


def _write(series: dict, out) -> None:
    metric, values = series.get("metric"), series.get("values")
    if not isinstance(metric, dict) or not all(isinstance(v, str) for v in metric.values()) or not isinstance(values, list):
        raise ValueError("labels that are not text, or values that are not a list")
    t, v = zip(*values, strict=True) if values else ((), ())  # a pair of more or fewer than two: ValueError
    out.write(orjson.dumps({"labels": labels_text(metric), "t": t, "v": v}, option=orjson.OPT_APPEND_NEWLINE))  # half the time of json.dumps


def labels_text(metric: dict[str, str]) -> str:
    """A series' labels sorted by name, as entries (lib/extracts.py drops __name__, which still tells
    series of a day's windows apart), in JSON text: Polars' reader holds entries read as structs at 3
    times the memory (0.84 GiB for the 282 MB body's), and unescapes an object read as text only in part."""
    return orjson.dumps([{"key": k, "value": metric[k]} for k in sorted(metric)]).decode()


def body_field(path: Path, prefix: str):
    """A JSON body's value at ``prefix`` (e.g. ``status``, ``data.resultType``), read up to it
    (Prometheus writes both before the result), or None; ijson.JSONError if it is not JSON."""
    with path.open("rb") as body:
        return next(ijson.items(body, prefix), None)


if __name__ == "__main__":
    sys.exit(0 if document_series_lines(Path(sys.argv[1]), Path(sys.argv[2])) else NOT_A_MATRIX)
