"""Parsed billing files kept in memory across the days of one run.

Every format streams the files it can (``FileFormat.scan``); the files read whole are the few it
cannot (a Parquet export with amounts as text, a file whose values do not all parse, read whole for
the error naming its row). Such a file can hold a whole month, and a backfill reads each day
separately: without this cache a 30-day backfill would parse it 30 times. Entries
are keyed by the file's version (ETag, generation, size+mtime), so a re-delivered file is parsed
afresh, and only the few most recent files are kept to bound memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import polars as pl

from cost_pipeline.lib.storage import StoredFile

MAX_FILES = 4
_cache: OrderedDict[tuple[str, str, str], pl.DataFrame] = OrderedDict()
_lock = threading.Lock()  # two days of a run are ingested side by side (lib/overlap)


def parsed(file: StoredFile, source: str, parse: Callable[[], pl.DataFrame]) -> pl.DataFrame:
    key = (file.uri, file.version, source)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    frame = parse()
    with _lock:
        _cache[key] = frame
        while len(_cache) > MAX_FILES:
            _cache.popitem(last=False)
    return frame
