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
import functools
import hashlib
import json
import operator
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from cost_pipeline.lib.billing import fingerprint

ROOT = Path(tempfile.gettempdir()) / "cost_pipeline_cache" / "parsed"
BAD = "_bad"  # the column of a typed frame marking a line a whole read would refuse
BLANK = "_blank"  # ... and a line it would drop as blank
LAYOUT = 4  # part of every copy's key: raise it when a reader's parsing changes, so no copy from older code is reused


def folder_for(path: Path, context: str) -> Path:
    """The parsed copy's folder for this version of ``path`` read with ``context`` (what else shapes it)."""
    stat = path.stat()
    key = f"{LAYOUT}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{context}"
    return ROOT / hashlib.sha256(key.encode()).hexdigest()[:24]


LINES = "lines.parquet"  # a copy's lines, in its folder


def copy_file(path: Path, context: str) -> Path:
    """The file of :func:`checked_copy`'s lines for this version of ``path`` (once made), with its
    :data:`BAD` and :data:`BLANK` columns: a reader that scans Parquet by path reads it as one."""
    return folder_for(path, context) / LINES


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


def blank_lines(raw: pl.LazyFrame, read: list[str]) -> tuple[pl.Expr, pl.LazyFrame]:
    """The :data:`BLANK` column of ``raw`` (a text export as read) and its blank lines, by the columns
    the reader ``read``\s only: a whole read drops the lines empty in every column (CSV ``\r\n`` gaps),
    and testing every column made the streamed pass parse all of them (a legacy CUR file has hundreds).
    A line empty in the read columns only is no blank line; :func:`checked_copy` looks at the others
    then (the blank lines returned here, as read, every column)."""
    empty = pl.all_horizontal(pl.col(read).is_null())
    return empty.alias(BLANK), raw.filter(empty)


def checked_copy(path: Path, typed: pl.LazyFrame, context: str, blank: pl.LazyFrame, distinct: str | None = None,
                 lookup: Callable[[list[str]], pl.DataFrame] | None = None, repeats: bool = False,
                 unreadable: tuple[type[Exception], ...] = ()) -> tuple[pl.LazyFrame, pl.DataFrame | None] | None:
    """``typed`` (a text export's mapped columns parsed, :data:`BAD` and :data:`BLANK`, see
    :func:`blank_lines`) written once per file version: None if any line is bad (the caller then reads
    the file whole, which names the row and value) or a ``blank`` line is not empty in every column,
    else the written lines without the blank ones, lazily, and ``lookup`` of the distinct values of
    column ``distinct`` (a tags column's JSON texts: few, even in a large file; parsed once and kept
    with the copy, as every read of the file joins them: parsing them again per read was 1-2.5 s of a
    1 M-line FOCUS CSV day).

    ``repeats``: also find whether two lines of the copy are identical in every column, for
    :func:`identical_rows` (0.2 s of a 1 M-line copy). ``unreadable``: errors besides Polars' that
    mean the text does not parse (raised by the source ``typed`` scans): no copy then either, and
    that is kept, so the next read of this version does not parse it again.

    One parse of the text, sunk whole with its marks: the counts and distinct values are then read
    from the copy. Each further sink of the parse (the count of bad lines, the distinct texts, the
    blank lines) computed the parsed columns again: 3.9 s for a 1 M-line FOCUS CSV.gz, 2.1 s for the
    copy alone."""

    def build(folder: Path) -> None:
        lines = folder / LINES
        try:
            typed.sink_parquet(lines, engine="streaming")
            copy = pl.scan_parquet(lines)
            bad, blanks = copy.select((pl.col(BAD) & ~pl.col(BLANK)).sum(), pl.col(BLANK).sum()).collect().row(0)
            clean = bad == 0 and not (blanks and blank.select(~pl.all_horizontal(pl.all().is_null())).collect(engine="streaming").to_series().any())
        except (pl.exceptions.PolarsError, *unreadable):
            clean, blanks = False, 0
        if clean and distinct and lookup:  # a text that does not parse names the file (and no copy is kept)
            texts = copy.filter(~pl.col(BLANK)).select(pl.col(distinct).drop_nulls().unique()).collect().to_series().to_list()
            lookup(texts).write_parquet(folder / "lookup.parquet")
        identical = False
        if clean and repeats:
            kept = copy.filter(~pl.col(BLANK)).drop(BAD, BLANK)
            row = functools.reduce(operator.xor, [pl.col(c).hash(seed=i) for i, c in enumerate(kept.collect_schema().names())])
            identical = fingerprint.repeats(kept.select(row).collect(engine="streaming").to_series())
        if not clean:
            lines.unlink(missing_ok=True)
        (folder / "checked.json").write_text(json.dumps({"clean": clean, "blank": blanks, "identical": identical}))

    folder = published(folder_for(path, context), build)
    checked = json.loads((folder / "checked.json").read_text())
    if not checked["clean"]:
        return None
    lines = pl.scan_parquet(folder / LINES)
    lines = (lines.filter(~pl.col(BLANK)) if checked["blank"] else lines).drop(BAD, BLANK)
    found = folder / "lookup.parquet"
    return lines, pl.read_parquet(found) if found.exists() else None


def identical_rows(path: Path, context: str) -> bool:
    """Whether the copy of ``path`` (made with ``repeats``) holds identical lines; False when unknown (a
    copy made without the check, or none yet)."""
    checked = folder_for(path, context) / "checked.json"
    return checked.exists() and bool(json.loads(checked.read_text()).get("identical"))
