"""Where billing files live: a local folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix``.

Readers list files with their version (S3 ETag, GCS generation, local size+mtime) and fetch them to
a local path, so Polars and PyArrow read every source the same way. Remote files are cached by
version, so an unchanged file is downloaded once however many days a backfill reads from it.
Clients come from dagster-aws's ``S3Resource`` and dagster-gcp's ``GCSResource`` in the assets;
plain boto3 / google-cloud-storage clients work as well (tests, CLI).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StoredFile:
    uri: str
    name: str  # path relative to the listed root, with "/" separators
    size: int
    version: str
    modified: dt.datetime


def split_uri(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` → ("s3", "bucket", "a/b"); a plain path → ("file", "", path)."""
    if "://" not in uri:
        return "file", "", uri
    scheme, rest = uri.split("://", 1)
    bucket, _, key = rest.partition("/")
    return scheme, bucket, key.strip("/")


@dataclass
class Storage:
    s3_client: Any = None
    gcs_client: Any = None
    bq_client: Any = None
    cache_dir: Path = Path(tempfile.gettempdir()) / "cost_pipeline_cache"

    def list(self, root: str, since: dt.datetime | None = None) -> list[StoredFile]:
        """Files under ``root``; with ``since``, only those modified after it (for sensors)."""
        files = self._list(root, since)
        return [f for f in files if since is None or f.modified > since]

    def _list(self, root: str, since: dt.datetime | None) -> list[StoredFile]:
        scheme, bucket, prefix = split_uri(root)
        if scheme == "file":
            base = Path(root)
            if base.is_file():
                return [self._local(base, base.name)]
            if not base.exists():
                return []
            return sorted(
                (self._local(p, p.relative_to(base).as_posix()) for p in base.rglob("*") if p.is_file()),
                key=lambda f: f.name,
            )
        if scheme == "s3":
            return self._list_s3(bucket, prefix, since)
        if scheme == "gs":
            return self._list_gcs(bucket, prefix)
        raise ValueError(f"{root}: unsupported scheme {scheme}:// (use a path, s3:// or gs://)")

    def fetch(self, file: StoredFile) -> Path:
        scheme, bucket, key = split_uri(file.uri)
        if scheme == "file":
            return Path(file.uri)
        digest = hashlib.sha256(f"{file.uri}@{file.version}".encode()).hexdigest()[:24]
        target = self.cache_dir / digest / Path(key).name
        if target.exists() and target.stat().st_size == file.size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")  # two days (or processes) may fetch it at once
        try:
            if scheme == "s3":
                self._s3().download_file(bucket, key, str(tmp))
            else:
                self._gcs().bucket(bucket).blob(key).download_to_filename(str(tmp))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    @staticmethod
    def _local(path: Path, name: str) -> StoredFile:
        stat = path.stat()
        modified = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)
        return StoredFile(str(path), name, stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}", modified)

    def bigquery_client(self):
        if self.bq_client is None:
            from google.cloud import bigquery

            self.bq_client = bigquery.Client()
        return self.bq_client

    def _s3(self):
        if self.s3_client is None:
            import boto3

            self.s3_client = boto3.client("s3")
        return self.s3_client

    def _gcs(self):
        if self.gcs_client is None:
            from google.cloud import storage

            self.gcs_client = storage.Client()
        return self.gcs_client

    def _list_s3(self, bucket: str, prefix: str, since: dt.datetime | None = None) -> list[StoredFile]:
        from dagster_aws.s3.sensor import get_objects

        base = prefix + "/" if prefix else ""
        objects = get_objects(bucket, base, since_last_modified=since, client=self._s3())
        return [
            StoredFile(f"s3://{bucket}/{o['Key']}", o["Key"][len(base):], o["Size"], o["ETag"].strip('"'), o["LastModified"])
            for o in sorted(objects, key=lambda o: o["Key"])
            if not o["Key"].endswith("/")
        ]

    def _list_gcs(self, bucket: str, prefix: str) -> list[StoredFile]:
        base = prefix + "/" if prefix else ""
        return [
            StoredFile(f"gs://{bucket}/{b.name}", b.name[len(base):], b.size, str(b.generation), b.updated)
            for b in sorted(self._gcs().list_blobs(bucket, prefix=base), key=lambda b: b.name)
            if not b.name.endswith("/")
        ]
