"""Querying a live Prometheus for one UTC day, within its per-query point limit.

Prometheus refuses a ``query_range`` that would return more than 11,000 points per series, so a
day at a fine step is fetched in consecutive windows, whose series ``lib/extracts.py`` stitches back
together by their label sets. Each answer is streamed to disk as Prometheus sent it: never held in
memory or decoded into Python objects (20,000 pods at 5-minute steps answer 282 MB, which decoded
into Python lists and floats held 2.1 GiB before Polars parsed it again), only checked for its
status and result type, and archived and parsed like an extract file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import ijson
import requests

from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.series_lines import body_field

MAX_POINTS = 11_000


def windows(day: dt.date, step: int) -> list[tuple[float, float]]:
    """Inclusive [start, end] windows covering the day's steps, each with at most MAX_POINTS points."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    last = start + 86400 - step
    span = (MAX_POINTS - 1) * step
    out, cursor = [], start
    while cursor <= last:
        end = min(cursor + span, last)
        out.append((cursor, end))
        cursor = end + step
    return out


def query_range_day(url: str, query: str, day: dt.date, step: int, timeout: float, target: Path) -> list[Path]:
    """Write the day's ``query_range`` answer to ``target`` when one window covers the day (any step of
    8 s or more), else each window's answer to ``target`` + ``.part-000``, ``.part-001`` ...; returns
    the files, in time order."""
    endpoint = url.rstrip("/") + "/api/v1/query_range"
    spans = windows(day, step)
    files = [target] if len(spans) == 1 else [window_file(target, i) for i in range(len(spans))]
    for (start, end), file in zip(spans, files):
        _fetch(endpoint, query, start, end, step, timeout, file)
    return files


def window_file(target: Path, index: int) -> Path:
    """Where the ``index``-th window of the answer meant for ``target`` is written (not ``*.json``: the
    files of one query's answer never pass for the answers of several)."""
    return target.with_name(f"{target.name}.part-{index:03d}")


def _fetch(endpoint: str, query: str, start: float, end: float, step: int, timeout: float, target: Path) -> None:
    """One window's response body written to ``target``, refused unless it is a successful Prometheus
    API response holding a matrix."""
    try:
        with requests.get(endpoint, params={"query": query, "start": start, "end": end, "step": step}, timeout=timeout, stream=True) as response:
            with target.open("wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
    except requests.RequestException as exc:
        raise InputError(endpoint, f"cannot reach Prometheus: {exc}") from None
    try:
        status = body_field(target, "status")
        failed = None if status == "success" else f"{body_field(target, 'errorType')}: {body_field(target, 'error')}"
        kind = body_field(target, "data.resultType") if status == "success" else None
    except ijson.JSONError:
        raise InputError(endpoint, f"HTTP {response.status_code}: not a Prometheus API response") from None
    if failed:
        raise InputError(endpoint, f"query {query!r} failed: {failed}")
    if kind != "matrix":
        raise InputError(endpoint, f"query {query!r}: not a matrix answer (resultType {kind!r})")
