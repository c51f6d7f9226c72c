"""Legacy CUR deliveries (CSV.gz + manifest per assembly) made from the sample CUR 2.0 data.

Used by tests and demos of restatements: the same month delivered again as a new assembly, with
the top-level manifest switched to it, as AWS does.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_GROUPS = {"identity": "identity", "bill": "bill", "line_item": "lineItem", "product": "product",
           "pricing": "pricing", "reservation": "reservation", "savings_plan": "savingsPlan"}


def legacy_header(cur2_name: str) -> str:
    """``line_item_unblended_cost`` → ``lineItem/UnblendedCost`` (``a_r_n`` → ``ARN``)."""
    for prefix, group in sorted(_GROUPS.items(), key=lambda kv: -len(kv[0])):
        if cur2_name.startswith(prefix + "_"):
            rest = cur2_name[len(prefix) + 1 :].replace("a_r_n", "arn")
            words = rest.split("_")
            return f"{group}/" + "".join("ARN" if w == "arn" else w[:1].upper() + w[1:] for w in words)
    return cur2_name


def tag_header(cur2_key: str) -> str:
    """CUR 2.0 ``user_ml_team`` → legacy ``resourceTags/user:ml-team``."""
    if cur2_key.startswith("user_"):
        return "resourceTags/user:" + cur2_key[len("user_"):].replace("_", "-")
    return "resourceTags/" + cur2_key.replace("_", ":", 2)


def to_csv_gz(table: pa.Table) -> bytes:
    scalar = [f.name for f in table.schema if not pa.types.is_map(f.type)]
    rows = table.to_pylist()
    tag_keys = sorted({k for r in rows for k, _ in (r["resource_tags"] or [])})
    header = [legacy_header(c) for c in scalar] + [tag_header(k) for k in tag_keys]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for r in rows:
        tags = dict(r["resource_tags"] or [])
        values = []
        for c in scalar:
            v = r[c]
            values.append("" if v is None else v.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(v, dt.datetime) else repr(v) if isinstance(v, float) else v)
        writer.writerow(values + [tags.get(k, "") for k in tag_keys])
    return gzip.compress(buffer.getvalue().encode("utf-8"), mtime=0)


def to_parquet(table: pa.Table) -> bytes:
    """The Athena-ready legacy delivery: CUR 2.0's column names and types, each tag a text column
    ``resource_tags_<key>`` (null where the line does not have it) instead of one map."""
    scalar = table.drop_columns([f.name for f in table.schema if pa.types.is_map(f.type)])
    rows = table["resource_tags"].to_pylist()
    for key in sorted({k for r in rows for k, _ in (r or [])}):
        scalar = scalar.append_column(f"resource_tags_{key}", pa.array([dict(r or []).get(key) for r in rows], pa.string()))
    sink = io.BytesIO()
    pq.write_table(scalar, sink)
    return sink.getvalue()


def deliver(files: dict[str, bytes], report: str, period_start: dt.date, assembly: str, table: pa.Table, prefix: str = "cur",
            parquet: bool = False) -> dict[str, bytes]:
    """Add one assembly of a month (one CSV.gz, or Parquet) and point the top-level manifest at it."""
    period_end = (period_start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    folder = f"{prefix}/{report}/{period_start:%Y%m%d}-{period_end:%Y%m%d}"
    key = f"{folder}/{assembly}/{report}-1." + ("snappy.parquet" if parquet else "csv.gz")
    files[key] = to_parquet(table) if parquet else to_csv_gz(table)
    manifest = {
        "assemblyId": assembly,
        "account": "100000000001",
        "bucket": "billing",
        "billingPeriod": {"start": f"{period_start:%Y%m%d}T000000.000Z", "end": f"{period_end:%Y%m%d}T000000.000Z"},
        "reportKeys": [key],
        "compression": "Parquet" if parquet else "GZIP",
        "contentType": "Parquet" if parquet else "text/csv",
    }
    files[f"{folder}/{report}-Manifest.json"] = json.dumps(manifest).encode()
    return files


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
