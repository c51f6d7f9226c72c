"""The cost lake: hive-partitioned Parquet, one file per table and day, replaced atomically.

Layout: ``<lake_uri>/<table>/date=YYYY-MM-DD/part-0.parquet``. A day is written to a hidden
temporary file in the same folder and renamed over the old one (``os.replace`` is atomic on POSIX),
so a reader sees either the previous day or the new one, never half of it, and a failed write leaves
the previous day untouched. Files carry their own ``date`` column as well as the hive path, so a
single file read alone still says which day it holds.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

PART_NAME = "part-0.parquet"


def _replace_atomically(target: Path, write: Callable[[Path], object]) -> Path:
    """Write to a hidden sibling, then rename over ``target``: readers see old or new, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{uuid.uuid4().hex}{target.suffix}"
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class Lake:
    root: Path

    @classmethod
    def from_uri(cls, uri: str) -> "Lake":
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        if "://" in uri:
            scheme = uri.split("://", 1)[0]
            raise ValueError(f"lake_uri {uri!r}: the {scheme}:// lake is not supported yet; use a local path")
        return cls(Path(uri).expanduser().resolve())

    def day_dir(self, table: str, day: dt.date) -> Path:
        return self.root / table / f"date={day.isoformat()}"

    def day_path(self, table: str, day: dt.date) -> Path:
        return self.day_dir(table, day) / PART_NAME

    def write_day(self, table: str, day: dt.date, frame: pl.DataFrame | pl.LazyFrame) -> Path:
        """Replace one day of a table. The frame must already be that day's rows only."""
        def write(tmp: Path) -> None:
            if isinstance(frame, pl.LazyFrame):
                frame.sink_parquet(tmp, engine="streaming")
            else:
                frame.write_parquet(tmp)

        return _replace_atomically(self.day_path(table, day), write)

    def write_file(self, table: str, day: dt.date, name: str, data: bytes) -> Path:
        """Store a raw file of a day (e.g. an archived Prometheus response), replaced atomically."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"unsafe file name {name!r}")
        return _replace_atomically(self.day_dir(table, day) / name, lambda tmp: tmp.write_bytes(data))

    def has_day(self, table: str, day: dt.date) -> bool:
        return self.day_path(table, day).exists()

    def scan_days(self, table: str, days: list[dt.date]) -> pl.LazyFrame:
        """Lazily read the given days; a missing day is an error, not an empty result."""
        paths = [self.day_path(table, d) for d in days]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"lake table {table!r} lacks days: {', '.join(missing[:5])}")
        return pl.scan_parquet(paths, hive_partitioning=False)

    def scan(self, table: str) -> pl.LazyFrame:
        """Every day the table holds (for reports and ad-hoc reads)."""
        paths = sorted((self.root / table).glob(f"date=*/{PART_NAME}"))
        if not paths:
            raise FileNotFoundError(f"lake table {table!r} is empty under {self.root}")
        return pl.scan_parquet(paths, hive_partitioning=False)
