"""Conservation: allocation neither creates nor loses money, per day and currency, exactly."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl

from cost_pipeline.lib.allocate import reconcile
from cost_pipeline.lib.lake import Lake

CONSERVES = dg.AssetCheckSpec(
    "allocation_conserves_cost_lines",
    asset="allocated_costs",
    blocking=True,
    description="Per day and currency, sum(allocated_costs.amount) == sum(cost_lines.effective_cost), all 12 decimal places.",
)


def reconciliation_result(lake: Lake, days: list[dt.date]) -> dg.AssetCheckResult:
    """Re-read both tables from the lake, so the check sees exactly what readers will see."""
    table = reconcile(
        lake.scan_days("allocated_costs", days).collect(),
        lake.scan_days("cost_lines", days).collect(),
    )
    off = table.filter(pl.col("allocated") != pl.col("billed"))
    worst = off.sort(pl.col("difference").abs(), descending=True).head(10)
    return dg.AssetCheckResult(
        check_name=CONSERVES.name,
        passed=off.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "days_checked": len(days),
            "days_off": off.height,
            "worst": dg.MetadataValue.md(
                "\n".join(f"- {r['date']} {r['currency']}: {r['difference']}" for r in worst.iter_rows(named=True))
                or "none"
            ),
        },
    )
