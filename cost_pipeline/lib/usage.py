"""Prometheus usage as one normalized table of samples.

Input is the raw body of ``/api/v1/query_range`` (``resultType: matrix``), whether it was read
from an extract file or archived from a live Prometheus, so a day can always be recomputed from
exactly what was used. Samples keep their labels as a map, minus ``__name__``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import polars as pl

from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.storage import Storage

SAMPLES_SCHEMA = {
    "date": pl.Date(),
    "query": pl.String(),
    "series": pl.Int64(),
    "timestamp": pl.Float64(),
    "value": pl.Float64(),
    "labels": pl.Map(pl.String(), pl.String()),
}
_ENTRIES = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))


def empty_samples() -> pl.DataFrame:
    return pl.DataFrame(schema=SAMPLES_SCHEMA)


def parse_query_range(body: dict | bytes | str, query: str, day: dt.date, source: str) -> pl.DataFrame:
    """One query's response as samples of ``day`` (samples outside the UTC day are dropped)."""
    if not isinstance(body, dict):
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(source, f"not JSON: {exc}") from None
    if body.get("status") != "success":
        raise InputError(source, f"Prometheus status {body.get('status')!r}: {body.get('error', 'no error given')}")
    data = body.get("data") or {}
    if data.get("resultType") != "matrix":
        raise InputError(source, f"expected resultType 'matrix' (a query_range response), got {data.get('resultType')!r}")
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    end = start + 86400
    rows: dict[str, list] = {"series": [], "timestamp": [], "value": [], "labels": []}
    for index, series in enumerate(data.get("result") or []):
        labels = [{"key": k, "value": str(v)} for k, v in sorted((series.get("metric") or {}).items()) if k != "__name__"]
        for point in series.get("values") or []:
            try:
                ts, value = float(point[0]), float(point[1])
            except (TypeError, ValueError, IndexError):
                raise InputError(source, f"series {index}: bad sample {point!r}") from None
            if start <= ts < end and math.isfinite(value):
                rows["series"].append(index)
                rows["timestamp"].append(ts)
                rows["value"].append(value)
                rows["labels"].append(labels)
    frame = pl.DataFrame(rows, schema_overrides={"series": pl.Int64, "timestamp": pl.Float64, "value": pl.Float64, "labels": _ENTRIES})
    return frame.with_columns(
        date=pl.lit(day), query=pl.lit(query), labels=pl.col("labels").cast(SAMPLES_SCHEMA["labels"])
    ).select(list(SAMPLES_SCHEMA))


def read_extracts(root: str | Path, day: dt.date, storage: Storage | None = None) -> pl.DataFrame:
    """Every ``<root>/date=YYYY-MM-DD/<query>.json`` of the day (local, s3:// or gs://); a missing
    day folder is no usage."""
    storage = storage or Storage()
    folder = f"{str(root).rstrip('/')}/date={day.isoformat()}"
    frames = []
    for stored in storage.list(folder):
        if stored.name.endswith(".json") and "/" not in stored.name:
            name = stored.name[: -len(".json")]
            frames.append(parse_query_range(storage.fetch(stored).read_bytes(), name, day, stored.uri))
    return pl.concat(frames) if frames else empty_samples()


def label(name: str) -> pl.Expr:
    return pl.col("labels").map.get(name)
