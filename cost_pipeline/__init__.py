"""cost_pipeline: who spends what on the cloud, and why, to the cent."""

import os

# Polars' Parquet scan prefetches many row groups ahead of a streaming sink; on a 13 M-line CUR day
# that held 1.3 GiB more than one row group at a time. Two ahead write that day 15 % faster (18.6 s
# instead of 21.5 s) but peak at 1.7 GiB instead of 1.4 GiB; set it higher where memory is plentiful
# or for billing files read straight from S3 if reads become latency-bound.
os.environ.setdefault("POLARS_ROW_GROUP_PREFETCH_SIZE", "1")

# Polars allocates through jemalloc, configured by this variable when its library loads (so it must
# be set before the first `import polars`). By default each thread's arena hands freed pages back
# to the kernel within milliseconds and the next morsel faults them in again: a third of a CUR
# day's CPU time was the kernel's. Fewer arenas, keeping freed pages 5 s for reuse: a 1.3 M-line day
# written in 1.7 s instead of 2.2 s, a 13 M-line day in 14 s instead of 17 s, peak 1.4 GiB instead
# of 1.3 GiB (BENCHMARKS.md). A value set by the operator wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", f"narenas:{max(1, (os.cpu_count() or 1) // 4)},dirty_decay_ms:5000,muzzy_decay_ms:0")
# PyArrow's default pool (mimalloc) kept the pages of the process's Parquet reads (the tags maps'
# dictionary pages, footers, schemas) for the life of the process: a 60-day backfill at 1 M lines a
# day held 0.97 GiB in its cost_lines step and 0.71 GiB in attribution after it (0.90 and 0.53 GiB
# before the dictionary reads); with the system allocator 0.72 and 0.52 GiB, in the same time
# (PyArrow's jemalloc: 0.85 and 0.57 GiB). Read when PyArrow first allocates, so this must come before
# any `import pyarrow`; a pool chosen by the operator wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def _glibc_malloc() -> None:
    """glibc's malloc (NumPy's arrays, PyArrow's reads): one arena, and blocks of 1 MB and more mapped on
    their own, so freeing one hands it back. By default the threshold rises to the largest block freed
    (up to 32 MB) and each thread gets an arena of its own: the ~9 MB buffers of hashing a tags map's
    entries (``lib/billing/map_hashes.py``, on two threads) then stayed in per-thread heaps, and a
    backfill process grew from 0.69 to 0.98 GiB over 8 days of 1 M lines (flat at 0.62-0.67 GiB with
    the threshold fixed). The one arena is what :func:`lib.memory.reusing_freed_memory` empties in one
    go. Only where the C library is glibc; ``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` set by the operator leave glibc's defaults alone."""
    from cost_pipeline.lib import memory

    memory.tune()


_glibc_malloc()
