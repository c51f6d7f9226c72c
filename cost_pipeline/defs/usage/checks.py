"""Usage coverage per pool: every query a pool's driver splits by has samples through the day."""

import datetime as dt

import dagster as dg

from cost_pipeline.config import Settings
from cost_pipeline.defs.day_checks import DayCheck, Outcome
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.markdown import md_table
from cost_pipeline.lib.usage_coverage import MIN_HOURS, pool_coverage, short_queries


def _coverage(lake: Lake, settings: Settings, day: dt.date) -> Outcome:
    coverage = pool_coverage(lake.scan_days("usage", [day]), settings.allocation.pools)
    short = short_queries(coverage)
    table = md_table(coverage.columns, [list(r) for r in coverage.iter_rows()])
    if short.is_empty():
        return True, {"coverage": dg.MetadataValue.md(table)}, f"every pool's driver queries have samples in ≥ {MIN_HOURS} of 24 hours"
    gaps = ", ".join(f"{p}: {q} ({h} h)" for p, q, h in short.select("pool", "query", "hours").iter_rows())
    return False, {"coverage": dg.MetadataValue.md(table)}, f"usage short for {gaps}: those pools are split by part of the day or left unattributed"


USAGE_COVERS_POOLS = DayCheck(
    asset="usage", name="usage_covers_pools", evaluate=_coverage, severity=dg.AssetCheckSeverity.WARN,
    description=f"Per day: each shared pool's driver queries have samples in at least {MIN_HOURS} of the day's 24 UTC hours.",
)
