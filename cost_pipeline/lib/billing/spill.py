"""Text exports (CSV, CSV.gz, JSONL) parsed once per file version into a local typed Parquet file.

Streaming a text export straight from the text parsed it once per pass: a check of its values, the
days it holds, content ids, the write. A 10 M-line FOCUS CSV.gz day took 114 s that way (the file read
whole: 59 s at 12 GiB). Parsed once into Parquet (the mapped columns, typed), the later passes read
that file, a day's read skips the row groups of other days by their statistics, and no pass holds the
file. The files live under the system's temporary directory, keyed by the export's path, size and
modification time, so a re-delivered file is parsed afresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

ROOT = Path(tempfile.gettempdir()) / "cost_pipeline_cache" / "parsed"
BAD = "_bad"  # the column of a typed frame marking a line a whole read would refuse
LAYOUT = 1  # part of every copy's key: raise it when a reader's parsing changes, so no copy from older code is reused


def folder_for(path: Path, context: str) -> Path:
    """The parsed copy's folder for this version of ``path`` read with ``context`` (what else shapes it)."""
    stat = path.stat()
    key = f"{LAYOUT}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{context}"
    return ROOT / hashlib.sha256(key.encode()).hexdigest()[:24]


KEEP_UNUSED = dt.timedelta(days=7)  # a copy no read used for this long is removed when another is made


def published(folder: Path, build: Callable[[Path], None]) -> Path:
    """``folder``, built by ``build`` into a folder of its own and renamed into place once complete: two
    processes parsing the same file (a backfill's days run in parallel) never see half of it, and the
    second to finish drops its own copy. Each use marks the folder used; making one removes the copies
    unused for :data:`KEEP_UNUSED` (re-delivered files leave their old versions' copies behind)."""
    if not folder.exists():
        prune(folder.parent)
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{folder.name}.", dir=folder.parent))
        try:
            build(work)
            work.rename(folder)
        except OSError:
            if not folder.exists():
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    os.utime(folder)  # used now
    return folder


def prune(root: Path) -> None:
    """Remove the folders under ``root`` unused for :data:`KEEP_UNUSED`."""
    if not root.is_dir():
        return
    cutoff = (dt.datetime.now() - KEEP_UNUSED).timestamp()
    for folder in root.iterdir():
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:  # removed by another process meanwhile
            pass


def split_blank(raw: pl.LazyFrame, read: list[str]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """``raw`` (a text export as read) as (its lines, its blank lines), by the columns the reader
    ``read``\s only: a whole read drops the lines empty in every column (CSV ``\r\n`` gaps), and testing
    every column made the streamed pass parse all of them (a legacy CUR file has hundreds). A line empty
    in the read columns only is no blank line; :func:`checked_copy` looks at the others then."""
    empty = pl.all_horizontal(pl.col(read).is_null())
    return raw.filter(~empty), raw.filter(empty)


def checked_copy(path: Path, typed: pl.LazyFrame, context: str, distinct: str | None = None,
                 blank: pl.LazyFrame | None = None) -> tuple[pl.LazyFrame, list[str]] | None:
    """``typed`` (a text export's mapped columns parsed, and :data:`BAD`) written once per file version:
    None if any line is bad (the caller then reads the file whole, which names the row and value),
    else the written lines, lazily, and the distinct values of column ``distinct`` (a tags column's
    JSON texts: few, even in a large file). One parse of the text: the copy, the check and the
    distinct values are sinks of one streaming pass. ``blank``: the lines left out of ``typed`` as
    blank (:func:`split_blank`); any of them that is not empty in every column is bad too (a second
    pass, over all columns, only for a file that has such lines)."""

    def build(folder: Path) -> None:
        lines, bad, values = folder / "lines.parquet", folder / "bad.parquet", folder / "distinct.parquet"
        blanks = folder / "blank.parquet"
        try:  # every query a sink: one collected into memory made Polars buffer the shared scan for it
            pl.collect_all([
                typed.drop(BAD).sink_parquet(lines, lazy=True),
                typed.select(pl.col(BAD).sum()).sink_parquet(bad, lazy=True),
                *([typed.select(pl.col(distinct).drop_nulls().unique()).sink_parquet(values, lazy=True)] if distinct else []),
                *([blank.select(pl.len()).sink_parquet(blanks, lazy=True)] if blank is not None else []),
            ], engine="streaming")
            clean = pl.read_parquet(bad).item() == 0
            if clean and blank is not None and pl.read_parquet(blanks).item():
                clean = not blank.select(~pl.all_horizontal(pl.all().is_null())).collect(engine="streaming").to_series().any()
        except pl.exceptions.PolarsError:
            clean = False
        texts = pl.read_parquet(values).to_series().to_list() if clean and distinct else []
        if not clean:
            lines.unlink(missing_ok=True)
        (folder / "checked.json").write_text(json.dumps({"clean": clean, "distinct": texts}))

    folder = published(folder_for(path, context), build)
    checked = json.loads((folder / "checked.json").read_text())
    return (pl.scan_parquet(folder / "lines.parquet"), checked["distinct"]) if checked["clean"] else None
