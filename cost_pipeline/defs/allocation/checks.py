"""Reconciliation: allocated costs add up to the bill's effective cost, per day and currency, exactly."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl

from cost_pipeline.lib.allocate import reconcile
from cost_pipeline.lib.lake import Lake

RECONCILES = dg.AssetCheckSpec(
    "reconciles_to_bill",
    asset="allocated_costs",
    blocking=True,
    description="Per day and currency, sum(allocated_costs.amount) == sum(cost_lines.effective_cost) to the cent.",
)


def reconciliation_result(lake: Lake, days: list[dt.date]) -> dg.AssetCheckResult:
    """Re-read both tables from the lake, so the check sees exactly what readers will see."""
    table = reconcile(
        lake.scan_days("allocated_costs", days).collect(),
        lake.scan_days("cost_lines", days).collect(),
    )
    off = table.filter(pl.col("allocated").round(2) != pl.col("billed").round(2))
    worst = off.sort(pl.col("difference").abs(), descending=True).head(10)
    return dg.AssetCheckResult(
        check_name="reconciles_to_bill",
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
