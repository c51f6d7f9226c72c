"""cost_pipeline: who spends what on the cloud, and why, to the cent."""

import os

# Polars' Parquet scan prefetches many row groups ahead of a streaming sink; on a 13 M-line CUR day
# that held 1.3 GiB more than one row group at a time, for no speed gain on local or cached files.
# Set it higher for billing files read straight from S3 if reads become latency-bound.
os.environ.setdefault("POLARS_ROW_GROUP_PREFETCH_SIZE", "2")
