"""The cost lake: hive-partitioned Parquet, one file per table and day, replaced atomically.

Layout: ``<lake_uri>/<table>/date=YYYY-MM-DD/part-0.parquet``, with ``lake_uri`` a local folder,
``s3://bucket/prefix`` or ``gs://bucket/prefix``. Locally a day is written to a temporary file under
``<lake>/_tmp/`` (outside every table, so no reader's ``date=*/*.parquet`` glob can see it, and on the
same file system) and renamed over the old one (``os.replace`` is atomic on POSIX); on S3 and GCS a
single upload replaces the object atomically. Either way a reader sees the previous day or the new
one, never half of it. Polars reads an S3 lake directly; a GCS lake's day files are fetched with the
google-cloud-storage client into a local cache keyed by object generation (so any endpoint the
client supports works, e.g. an emulator via ``STORAGE_EMULATOR_HOST``), then scanned locally.

A run over a range of days stages every day first (:meth:`Lake.staging`) and replaces the days only
once all of them were computed, so a bad input on day 2 leaves day 1 as it was. Files carry their
own ``date`` column as well as the hive path, so a single file read alone still says which day it holds.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from cost_pipeline.lib.storage import split_uri

PART_NAME = "part-0.parquet"
WORK_DIR = "_tmp"  # temporary and staged files: inside the lake (same file system), outside every table
STALE_SECONDS = 24 * 3600  # staged files of a run killed this long ago are removed
GCS_CACHE = Path(tempfile.gettempdir()) / "cost_pipeline_lake_cache"


def _replace_atomically(target: Path, write: Callable[[Path], object], work: Path) -> Path:
    """Write to a temporary file outside the table, then rename over ``target``: old or new, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / f"{uuid.uuid4().hex}{target.suffix}"
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass
class Staging:
    """Days of one table computed by a run, held back until every day of the run succeeded."""

    lake: "Lake"
    table: str
    folder: Path
    staged: dict[dt.date, Path] = field(default_factory=dict)

    def write_day(self, day: dt.date, frame: pl.DataFrame | pl.LazyFrame) -> str:
        """Stage one day (a LazyFrame is streamed to disk); returns where it will live once the run
        commits. ``scan(day)`` reads the staged rows back."""
        path, location = self.reserve(day)
        _write_frame(frame, path)
        return location

    def reserve(self, day: dt.date) -> tuple[Path, str]:
        """(the staged file to write, where it will live): for a caller that sinks the day itself,
        e.g. in one ``pl.collect_all`` with other queries over the same plan."""
        self.staged[day] = self.folder / f"{day.isoformat()}.parquet"
        return self.staged[day], self.lake.location(self.lake._day(self.table, day), PART_NAME)

    def scan(self, day: dt.date) -> pl.LazyFrame:
        return pl.scan_parquet(self.staged[day])

    def commit(self) -> None:
        for day, path in sorted(self.staged.items()):
            if self.lake.is_local:
                target = self.lake.day_path(self.table, day)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
            else:
                self.lake._put((self.lake._day(self.table, day), PART_NAME), lambda tmp, src=path: shutil.copyfile(src, tmp))


# Snappy, like the billing exports themselves: every reader of the lake (DuckDB, Athena, Spark, BigQuery)
# has it, and on a 13 M-line day it writes in 12 s where Polars' default zstd takes 18 s.
PARQUET = {"compression": "snappy"}


def written_as_strings(frame: pl.LazyFrame, columns: list[str], key: str | None = None) -> tuple[pl.LazyFrame, dict[str, str]]:
    """``frame`` to sink with its String ``columns`` as Categoricals, and the sink's ``metadata``: the
    ``ARROW:schema`` Polars writes for ``frame`` as it is (without a partitioned sink's ``key``).

    Polars' writer costs as much for a column holding one value 10 M times as for most others (each
    value copied, counted for the cardinality estimate and hashed into the dictionary); a Categorical's
    dictionary pages it writes as they are, and cast from a literal it costs nothing. Under the schema
    of plain strings the file is byte for byte the one written from strings: every reader sees strings.
    For columns holding one value per file or query: the cast of other columns costs what it saves."""
    schema = frame.collect_schema()
    buffer = io.BytesIO()
    pl.DataFrame(schema={c: t for c, t in schema.items() if c != key}).write_parquet(buffer)
    arrow_schema = pq.read_metadata(io.BytesIO(buffer.getvalue())).metadata[b"ARROW:schema"].decode()
    return frame.with_columns(pl.col([c for c in columns if schema.get(c) == pl.String]).cast(pl.Categorical)), {"ARROW:schema": arrow_schema}


# Tables whose columns changed between versions (cost_lines: tag_set added, the tags map moved to the
# tag_sets table): a scan over old and new days inserts a missing column as null (or leaves an extra
# one out) instead of failing. These tables' files are only ever written by this pipeline, so a
# column is never missing otherwise.
CHANGED_COLUMNS = {"cost_lines": ["tag_set", "tags"]}


def _evolved(table: str) -> dict:
    return {"missing_columns": "insert", "extra_columns": "ignore"} if table in CHANGED_COLUMNS else {}


def _local_version(stat: os.stat_result) -> str:
    """A local file's version: its size and modification time in ns (a replaced file has another)."""
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def _write_frame(frame: pl.DataFrame | pl.LazyFrame, path: Path) -> None:
    if isinstance(frame, pl.LazyFrame):
        frame.sink_parquet(path, engine="streaming", **PARQUET)
    else:
        frame.write_parquet(path, **PARQUET)


@dataclass(frozen=True)
class Lake:
    uri: str  # an absolute local path, s3://bucket/prefix or gs://bucket/prefix
    endpoint_url: str | None = None
    region: str | None = None
    gcp_project: str | None = None  # a GCS lake's project (else the environment's default)
    _client: list = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_uri(cls, uri: str, endpoint_url: str | None = None, region: str | None = None, gcp_project: str | None = None) -> "Lake":
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        scheme = split_uri(uri)[0]
        if scheme == "file":
            return cls(str(Path(uri).expanduser().resolve()))
        if scheme not in ("s3", "gs"):
            raise ValueError(f"lake_uri {uri!r}: use a local path, s3://bucket/prefix or gs://bucket/prefix ({scheme}:// is not supported)")
        return cls(uri.rstrip("/"), endpoint_url, region, gcp_project)

    @classmethod
    def from_settings(cls, settings) -> "Lake":
        """The configured lake (``lake_uri``, ``lake_endpoint_url``, ``lake_region``, ``lake_gcp_project``)."""
        return cls.from_uri(settings.lake_uri, settings.lake_endpoint_url, settings.lake_region, settings.lake_gcp_project)

    @property
    def is_gcs(self) -> bool:
        return self.uri.startswith("gs://")

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    @property
    def root(self) -> Path:
        """The local folder of a local lake (reports and tests read files from it)."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local lake")
        return Path(self.uri)

    def location(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def _day(self, table: str, day: dt.date) -> str:
        return f"{table}/date={day.isoformat()}"

    def day_path(self, table: str, day: dt.date) -> Path:
        return self.root / self._day(table, day) / PART_NAME

    # --- object store plumbing (S3, GCS) ------------------------------------------------------
    def _s3(self):
        if not self._client:
            from dagster_aws.s3 import S3Resource

            self._client.append(S3Resource(endpoint_url=self.endpoint_url, region_name=self.region).get_client())
        return self._client[0]

    def _bucket(self):
        """The GCS bucket (dagster-gcp's client: application default credentials / workload identity)."""
        if not self._client:
            from dagster_gcp import GCSResource

            self._client.append(GCSResource(project=self.gcp_project).get_client())
        return self._client[0].bucket(split_uri(self.uri)[1])

    def _gcs_local(self, *parts: str) -> Path:
        """A local copy of a GCS object, fetched once per object generation."""
        _, key = self._key(*parts)
        blob = self._bucket().get_blob(key)
        if blob is None:
            raise FileNotFoundError(f"{self.location(*parts)} does not exist")
        path = GCS_CACHE / split_uri(self.uri)[1] / f"{key}@{blob.generation}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            for old in path.parent.glob(f"{Path(key).name}@*"):  # an older generation of the same object
                old.unlink(missing_ok=True)
            tmp = path.with_name(f".{uuid.uuid4().hex}")
            blob.download_to_filename(str(tmp))
            os.replace(tmp, path)
        return path

    def _keys(self, prefix: str) -> list[str]:
        return list(self._versions(prefix))

    def _versions(self, prefix: str) -> dict[str, str]:
        return {key: version for key, (version, _) in self._objects(prefix).items()}

    def _objects(self, prefix: str) -> dict[str, tuple[str, int]]:
        """Object keys under ``prefix`` with a version that changes whenever the object is replaced
        (GCS: its generation; S3: its ETag and size), and their size."""
        bucket, key = self._key(prefix)
        if self.is_gcs:
            return {b.name: (str(b.generation), b.size) for b in self._bucket().client.list_blobs(bucket, prefix=key + "/")}
        pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key + "/")
        return {o["Key"]: (f"{o['ETag'].strip(chr(34))}-{o['Size']}", o["Size"]) for page in pages for o in page.get("Contents", [])}

    def _key(self, *parts: str) -> tuple[str, str]:
        _, bucket, prefix = split_uri(self.uri)
        return bucket, "/".join(p for p in [prefix, *parts] if p)

    def storage_options(self) -> dict[str, str] | None:
        """Polars' object-store options for an S3 lake (credentials come from the AWS environment)."""
        if self.is_local or self.is_gcs:
            return None
        options = {}
        if self.endpoint_url:
            options["aws_endpoint_url"] = self.endpoint_url
            options["aws_allow_http"] = "true" if self.endpoint_url.startswith("http://") else "false"
        if self.region or os.environ.get("AWS_DEFAULT_REGION"):
            options["aws_region"] = self.region or os.environ["AWS_DEFAULT_REGION"]
        return options

    def _put(self, key_parts: tuple[str, ...], write: Callable[[Path], object]) -> str:
        bucket, key = self._key(*key_parts)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "object"
            write(path)
            if self.is_gcs:
                self._bucket().blob(key).upload_from_filename(str(path))  # one upload: atomic replacement
                return f"gs://{bucket}/{key}"
            self._s3().upload_file(str(path), bucket, key)  # one PUT: atomic replacement
        return f"s3://{bucket}/{key}"

    def _exists(self, *parts: str) -> bool:
        bucket, key = self._key(*parts)
        if self.is_gcs:
            return self._bucket().blob(key).exists()
        response = self._s3().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(o["Key"] == key for o in response.get("Contents", []))

    # --- the lake's interface ----------------------------------------------------------------
    def write_day(self, table: str, day: dt.date, frame: pl.DataFrame | pl.LazyFrame) -> str:
        """Replace one day of a table. The frame must already be that day's rows only."""
        if self.is_local:
            return str(_replace_atomically(self.day_path(table, day), lambda tmp: _write_frame(frame, tmp), self.root / WORK_DIR))
        return self._put((self._day(table, day), PART_NAME), lambda tmp: _write_frame(frame, tmp))

    @contextmanager
    def staging(self, table: str) -> Iterator[Staging]:
        """Stage a run's days of ``table``; they replace the lake's days only if the block succeeds."""
        base = self.root / WORK_DIR if self.is_local else Path(tempfile.gettempdir()) / "cost_pipeline_staging"
        base.mkdir(parents=True, exist_ok=True)
        for old in base.glob("stage-*"):  # left behind by killed runs
            if old.is_dir() and time.time() - old.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix="stage-", dir=base))
        try:
            stage = Staging(self, table, folder)
            yield stage
            stage.commit()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def write_table(self, table: str, frame: pl.DataFrame) -> str:
        """Replace an unpartitioned table (one file)."""
        if self.is_local:
            return str(_replace_atomically(self.root / table / PART_NAME, lambda tmp: _write_frame(frame, tmp), self.root / WORK_DIR))
        return self._put((table, PART_NAME), lambda tmp: _write_frame(frame, tmp))

    def read_table(self, table: str) -> pl.DataFrame | None:
        """An unpartitioned table, or None before its first write."""
        data = self.read_file(table, None, PART_NAME)
        return pl.read_parquet(io.BytesIO(data)) if data is not None else None

    def write_file(self, table: str, day: dt.date | None, name: str, data: bytes | Path) -> str:
        """Store a raw file (an archived Prometheus response, a report), replaced atomically; ``data``:
        its bytes, or a local file copied without being read into memory."""
        if "/" in name or name.startswith(".") or ".." in table:
            raise ValueError(f"unsafe file name {name!r}")
        folder = self._day(table, day) if day else table
        write = (lambda tmp: shutil.copyfile(data, tmp)) if isinstance(data, Path) else (lambda tmp: tmp.write_bytes(data))
        if self.is_local:
            return str(_replace_atomically(self.root / folder / name, write, self.root / WORK_DIR))
        return self._put((folder, name), write)

    def fetch_file(self, table: str, day: dt.date | None, name: str, target: Path) -> bool:
        """Copy a raw file to the local ``target`` without holding it in memory; False if there is none."""
        folder = self._day(table, day) if day else table
        if self.is_local:
            path = self.root / folder / name
            if not path.exists():
                return False
            shutil.copyfile(path, target)
            return True
        if not self._exists(folder, name):
            return False
        bucket, key = self._key(folder, name)
        if self.is_gcs:
            self._bucket().blob(key).download_to_filename(str(target))
        else:
            self._s3().download_file(bucket, key, str(target))
        return True

    def read_file(self, table: str, day: dt.date | None, name: str) -> bytes | None:
        folder = self._day(table, day) if day else table
        if self.is_local:
            path = self.root / folder / name
            return path.read_bytes() if path.exists() else None
        if not self._exists(folder, name):
            return None
        bucket, key = self._key(folder, name)
        if self.is_gcs:
            return self._bucket().blob(key).download_as_bytes()
        return self._s3().get_object(Bucket=bucket, Key=key)["Body"].read()

    def has_day(self, table: str, day: dt.date) -> bool:
        if self.is_local:
            return self.day_path(table, day).exists()
        return self._exists(self._day(table, day), PART_NAME)

    def days(self, table: str) -> set[dt.date]:
        """The days a daily table holds."""
        if self.is_local:
            names = [p.parent.name for p in (self.root / table).glob(f"date=*/{PART_NAME}")]
        else:
            names = [k.split("/")[-2] for k in self._keys(table) if k.endswith("/" + PART_NAME)]
        return {dt.date.fromisoformat(n.removeprefix("date=")) for n in names if n.startswith("date=")}

    def day_versions(self, table: str) -> dict[dt.date, str]:
        """The days a daily table holds, each with a version of its file that changes whenever the
        day is replaced (locally its size and modification time in ns), for caches of per-day results."""
        return {day: version for day, (version, _) in self._day_files(table).items()}

    def day_version(self, table: str, day: dt.date) -> str | None:
        """:meth:`day_versions` of one day (None: the table lacks it), without listing the others."""
        if self.is_local:
            path = self.day_path(table, day)
            return _local_version(path.stat()) if path.exists() else None
        objects = self._objects(self._day(table, day))
        return next((version for key, (version, _) in objects.items() if key.endswith("/" + PART_NAME)), None)

    def day_sizes(self, table: str) -> dict[dt.date, int]:
        """The size in bytes of each day's file of a daily table (how much a day's reader takes on)."""
        return {day: size for day, (_, size) in self._day_files(table).items()}

    def _day_files(self, table: str) -> dict[dt.date, tuple[str, int]]:
        if self.is_local:
            files = {p.parent.name: p.stat() for p in (self.root / table).glob(f"date=*/{PART_NAME}")}
            named = {name: (_local_version(st), st.st_size) for name, st in files.items()}
        else:
            named = {k.split("/")[-2]: v for k, v in self._objects(table).items() if k.endswith("/" + PART_NAME)}
        return {dt.date.fromisoformat(n.removeprefix("date=")): v for n, v in named.items() if n.startswith("date=")}

    def local_day_file(self, table: str, day: dt.date) -> Path | None:
        """The day's file on local disk (a local lake, or a GCS lake's cached copy); None on S3."""
        if self.is_local:
            path = self.day_path(table, day)
            return path if path.exists() else None
        if self.is_gcs:
            return self._gcs_local(self._day(table, day), PART_NAME)
        return None

    def scan_days(self, table: str, days: list[dt.date]) -> pl.LazyFrame:
        """Lazily read the given days; a missing day is an error, not an empty result."""
        missing = [d.isoformat() for d in days if not self.has_day(table, d)]
        if missing:
            raise FileNotFoundError(f"lake table {table!r} under {self.uri} lacks days: {', '.join(missing[:5])}")
        if self.is_gcs:
            paths = [str(self._gcs_local(self._day(table, d), PART_NAME)) for d in days]
        else:
            paths = [self.location(self._day(table, d), PART_NAME) for d in days]
        return pl.scan_parquet(paths, hive_partitioning=False, storage_options=self.storage_options(), **_evolved(table))

    def scan(self, table: str) -> pl.LazyFrame:
        """Every day the table holds (for reports and ad-hoc reads)."""
        if self.is_local and not list((self.root / table).glob(f"date=*/{PART_NAME}")):
            raise FileNotFoundError(f"lake table {table!r} is empty under {self.uri}")
        if self.is_gcs:
            days = sorted(self.days(table))
            if not days:
                raise FileNotFoundError(f"lake table {table!r} is empty under {self.uri}")
            return self.scan_days(table, days)
        pattern = self.location(table, "date=*", PART_NAME)
        return pl.scan_parquet(pattern, hive_partitioning=False, storage_options=self.storage_options(), **_evolved(table))
