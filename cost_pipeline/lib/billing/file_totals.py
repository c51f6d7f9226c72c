"""The bill side of the reconciliation summed file by file while the ingest has each file at hand.

``bill_totals`` sums the delivered files themselves, apart from the ingest, so that a line the ingest
lost or counted twice shows. After a year's backfill that meant reading ~6 GB of billing columns from
disk again (365 files of 1 M lines: 44-85 s of the reports' first run, disk-bound on this machine),
minutes after the ingest had read the same files. So ``cost_lines`` also sums each file it reads with
``bill_totals``' own summing (:func:`~cost_pipeline.lib.billing.sources.files_summed`: a plan of its
own over the whole file, every day it holds, not the ingest's pass over the run's days), by the
file's version, into the lake's ``bill_file_totals``; ``bill_totals`` takes a file's sums from there
when the delivered version is the one summed, and reads every other file as before. The cost: one more
read of a file the page cache still holds, ~0.1 s of CPU a 1 M-line file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import polars as pl

from cost_pipeline.lib.billing.sources import FILE_SUMS_SCHEMA, HeldFile, file_days, files_summed
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.storage import Storage

FILE_TOTALS = "bill_file_totals"


def read_file_totals(lake) -> pl.DataFrame | None:
    """The lake's per-file sums in :data:`FILE_SUMS_SCHEMA` (None: none yet, or unreadable or of other
    columns or types: the files are then read)."""
    try:
        table = lake.read_table(FILE_TOTALS)
        return None if table is None else table.select([pl.col(c).cast(t) for c, t in FILE_SUMS_SCHEMA.items()])
    except (OSError, pl.exceptions.PolarsError):
        return None


class FileSums:
    """The sums of the files a ``cost_lines`` run reads, each file once in its current version (two
    batches of days run side by side on worker threads, and a file may hold days of both)."""

    def __init__(self, known: pl.DataFrame | None):
        self._done = set(known.select("uri", "version").iter_rows()) if known is not None else set()
        self._lock = threading.Lock()
        self.frames: list[pl.DataFrame] = []

    def add(self, files: list[HeldFile], storage_for: Callable[..., Storage]) -> None:
        for held in files:
            key = (held.file.uri, held.file.version)
            with self._lock:
                if key in self._done:
                    continue
                self._done.add(key)
            storage = storage_for(held.source)
            try:
                file_days(held.source, held.file, storage)  # what bill_totals validates before summing
                sums = files_summed(held.source, [held.file], storage)
            except (InputError, OSError, pl.exceptions.PolarsError):
                continue  # bill_totals reads the file itself and reports what is wrong
            frame = sums.with_columns(uri=pl.lit(held.file.uri), version=pl.lit(held.file.version)).select(
                [pl.col(c).cast(t) for c, t in FILE_SUMS_SCHEMA.items()])
            with self._lock:
                self.frames.append(frame)

    def record(self, lake) -> None:
        """Merge into the lake's table: a file summed again replaces its older version's rows."""
        if not self.frames:
            return
        new = pl.concat(self.frames)
        known = read_file_totals(lake)
        kept = None if known is None else known.filter(~pl.col("uri").is_in(new["uri"].unique().implode()))
        lake.write_table(FILE_TOTALS, pl.concat([f for f in (kept, new) if f is not None]).sort("uri", "date", "currency"))
