"""glibc's malloc settings, and keeping freed memory for a step that frees and allocates the same
blocks over and over; how many row groups Polars' scans read ahead.

Freeing a block of 1 MB or more hands it back to the kernel (see ``cost_pipeline/__init__.py`` for
why), and the next block of the same size is faulted in and zeroed again. Hashing a 10 M-line day's
tags maps (``lib/billing/map_hashes.py``: a few MB per row group, on two threads) spent a third of
its CPU time so (2.25 M page faults; 2.6-2.8 s). :func:`reusing_freed_memory` keeps what is freed
for the step's duration and hands it all back at its end: 0.1-0.2 M faults, 1.6-2.0 s, the same peak.
Only for such a step: kept process-wide, every step's freed memory would stay with its process.
Imports nothing heavy: ``cost_pipeline/__init__.py`` tunes glibc before Polars and PyArrow load.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MAPPED_FROM = 1 << 20  # blocks of this size and more are mapped on their own
TRIM_FROM = 128 << 10  # glibc's default: free memory above the heap's top beyond this goes back
OPERATOR_SET = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _libc():
    if any(os.environ.get(v) for v in OPERATOR_SET):  # the operator's settings win
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


LIBC = _libc()


def tune() -> None:
    """One arena (every thread's blocks where :func:`reusing_freed_memory`'s trim reaches them) and
    blocks of 1 MB and more mapped on their own, so freeing one hands it back. By default the threshold
    rises to the largest block freed (up to 32 MB) and each thread gets an arena of its own: the ~9 MB
    buffers of hashing a tags map's entries (on two threads) then stayed in per-thread heaps, and a
    backfill process grew from 0.69 to 0.98 GiB over 8 days of 1 M lines (flat at 0.62-0.67 GiB with
    the threshold fixed)."""
    if LIBC is not None:
        LIBC.mallopt(M_ARENA_MAX, 1)
        LIBC.mallopt(M_MMAP_THRESHOLD, MAPPED_FROM)


_lock = threading.Lock()
_reusing = 0  # blocks inside reusing_freed_memory: two days of a run are ingested side by side (lib/overlap)


@contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """Within: blocks up to 32 MB (glibc's largest threshold) come from the heap and freed memory
    stays there for reuse; after: the threshold as before and every free page handed back. Whatever
    the block frees must be released before it ends to be handed back. The settings are the process's:
    with blocks on several threads they hold until the last one ends."""
    global _reusing
    if LIBC is None:
        yield
        return
    with _lock:
        _reusing += 1
        if _reusing == 1:
            LIBC.mallopt(M_MMAP_THRESHOLD, 32 << 20)
            LIBC.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # a C int: the largest
    try:
        yield
    finally:
        with _lock:
            _reusing -= 1
            if _reusing == 0:
                LIBC.mallopt(M_MMAP_THRESHOLD, MAPPED_FROM)
                LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_FROM)
                import pyarrow as pa

                pa.default_memory_pool().release_unused()
                LIBC.malloc_trim(0)


PREFETCH = "POLARS_ROW_GROUP_PREFETCH_SIZE"  # read by Polars when a query starts
# set with this project's default, so that processes started from this one (run workers, step
# processes) tell it from the operator's own setting, which they inherit the same way
DEFAULTED = "COST_PIPELINE_PREFETCH_DEFAULTED"
_prefetch_chosen = False  # the operator set it: never changed here


def one_row_group_ahead() -> None:
    """Polars' Parquet scans hold one row group ahead of a streaming sink (see
    ``cost_pipeline/__init__.py``), unless the operator chose otherwise."""
    global _prefetch_chosen
    _prefetch_chosen = PREFETCH in os.environ and not os.environ.get(DEFAULTED)
    if not _prefetch_chosen:
        os.environ[PREFETCH], os.environ[DEFAULTED] = "1", "1"


_ahead: list[int] = []  # the counts of the blocks inside row_groups_ahead, in the order they began
_ahead_before: list[str | None] = [None]  # the variable before the first of them


@contextmanager
def row_groups_ahead(count: int) -> Iterator[None]:
    """Polars' queries started within read ``count`` row groups ahead. One ahead, a file's nested
    columns are decoded on one core: a GCP export's labels (lists of key/value records) took 5.4 s of
    a 10 M-line day so, 2.6 s two ahead. For that pass only: the day's whole ingest two ahead took 21-23 s
    instead of 24 s, but peaked at 1.33-1.46 GiB instead of 1.24 GiB (four ahead: 20 s at 2.2 GiB).
    The operator's setting wins. The variable is the process's: with blocks on several threads, the
    largest count of those still inside holds, and the setting before comes back after the last."""
    if _prefetch_chosen:
        yield
        return
    with _lock:
        if not _ahead:
            _ahead_before[:] = [os.environ.get(PREFETCH)]
        _ahead.append(count)
        os.environ[PREFETCH] = str(max(_ahead))
    try:
        yield
    finally:
        with _lock:
            _ahead.remove(count)
            value = str(max(_ahead)) if _ahead else _ahead_before[0]
            if value is None:
                os.environ.pop(PREFETCH, None)
            else:
                os.environ[PREFETCH] = value

