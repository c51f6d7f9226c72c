"""Querying a live Prometheus for one UTC day, within its per-query point limit.

Prometheus refuses a ``query_range`` that would return more than 11,000 points per series, so a
day at a fine step is fetched in consecutive windows and the series are stitched back together by
their label sets. The stitched body has the same shape as a single response, so it can be archived
and parsed exactly like an extract file.
"""

from __future__ import annotations

import datetime as dt
import json

import requests

from cost_pipeline.lib.errors import InputError

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


def query_range_day(url: str, query: str, day: dt.date, step: int, timeout: float) -> dict:
    merged: dict[str, dict] = {}
    endpoint = url.rstrip("/") + "/api/v1/query_range"
    for start, end in windows(day, step):
        try:
            response = requests.get(endpoint, params={"query": query, "start": start, "end": end, "step": step}, timeout=timeout)
        except requests.RequestException as exc:
            raise InputError(endpoint, f"cannot reach Prometheus: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            raise InputError(endpoint, f"HTTP {response.status_code}: not a Prometheus API response") from None
        if body.get("status") != "success":
            raise InputError(endpoint, f"query {query!r} failed: {body.get('errorType')}: {body.get('error')}")
        for series in body["data"]["result"]:
            key = json.dumps(series["metric"], sort_keys=True)
            merged.setdefault(key, {"metric": series["metric"], "values": []})["values"].extend(series["values"])
    return {"status": "success", "data": {"resultType": "matrix", "result": list(merged.values())}}
