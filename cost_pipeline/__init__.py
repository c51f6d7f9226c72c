"""cost_pipeline: who spends what on the cloud, and why, to the cent."""

import os

# glibc's malloc and Polars' read-ahead (lib/memory.py imports nothing heavy; the operator's settings win).
from cost_pipeline.lib import memory

# Polars' Parquet scan prefetches many row groups ahead of a streaming sink; on a 13 M-line CUR day
# that held 1.3 GiB more than one row group at a time. Two ahead write that day 15 % faster (18.6 s
# instead of 21.5 s) but peak at 1.7 GiB instead of 1.4 GiB (a 10 M-line CUR day now: 4-7 % faster, 1.0
# -> 1.15 GiB); set POLARS_ROW_GROUP_PREFETCH_SIZE higher where memory is plentiful or for billing files
# read straight from S3 if reads become latency-bound. A GCP export's pass over its labels reads two
# ahead (memory.row_groups_ahead).
memory.one_row_group_ahead()

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

# glibc's malloc (NumPy's arrays, PyArrow's reads): one arena and a fixed mmap threshold, see lib/memory.py.
memory.tune()

# Dagster writes a ranged run's per-partition asset events (a step's materializations, the run's
# planned events) in batches when this is set, and the local SQLite storage
# (cost_pipeline/instance/sqlite_storage.py) and PostgreSQL store a batch in one transaction per
# database instead of one per event. Read when events are handled; a value set by the operator wins.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "500")
