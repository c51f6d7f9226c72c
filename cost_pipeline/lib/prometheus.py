"""Querying a live Prometheus for one UTC day, within its per-query point limit.

Prometheus refuses a ``query_range`` that would return more than 11,000 points per series, so a
day at a fine step is fetched in consecutive windows and the series are stitched back together by
their label sets. The stitched body has the same shape as a single response, so it can be archived
and parsed exactly like an extract file. A day that fits one window (any step of 8 s or more) is
streamed to disk as Prometheus sent it: never held in memory or decoded into Python objects (20,000 pods at 5-minute steps
answer 282 MB, which decoded into Python lists and floats held 2.1 GiB before Polars parsed it
again), only checked for its status.
"""

from __future__ import annotations

import datetime as dt
import json
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


def query_range_day(url: str, query: str, day: dt.date, step: int, timeout: float, target: Path) -> None:
    """Write the day's ``query_range`` body to ``target``: the response itself, streamed to disk, when
    one window covers the day; else the windows' series stitched by their label sets."""
    endpoint = url.rstrip("/") + "/api/v1/query_range"
    spans = windows(day, step)
    if len(spans) == 1:
        _fetch(endpoint, query, *spans[0], step, timeout, target)
        return
    merged: dict[str, dict] = {}
    for start, end in spans:
        _fetch(endpoint, query, start, end, step, timeout, target)
        try:
            for series in json.loads(target.read_bytes())["data"]["result"]:
                key = json.dumps(series["metric"], sort_keys=True)
                merged.setdefault(key, {"metric": series["metric"], "values": []})["values"].extend(series["values"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise InputError(endpoint, f"query {query!r}: not a matrix answer ({type(exc).__name__}: {exc})") from None
    target.write_bytes(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": list(merged.values())}}).encode())


def _fetch(endpoint: str, query: str, start: float, end: float, step: int, timeout: float, target: Path) -> None:
    """One window's response body written to ``target``, refused unless it is a successful Prometheus
    API response."""
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
    except ijson.JSONError:
        raise InputError(endpoint, f"HTTP {response.status_code}: not a Prometheus API response") from None
    if failed:
        raise InputError(endpoint, f"query {query!r} failed: {failed}")
