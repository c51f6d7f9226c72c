"""Dagster definitions, one folder per area; each asset is thin wiring over ``cost_pipeline.lib``."""

import warnings

# Single-run backfills are the documented way to backfill a range in one run; the flag is "beta"
# only in name and would otherwise print a warning per asset on every import.
warnings.filterwarnings("ignore", message=r".*backfill_policy.*")
