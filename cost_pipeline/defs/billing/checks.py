"""The bill reconciliation: the lake's cost lines add up to what the provider delivered."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl

from cost_pipeline.lib.billing.totals import held_totals, reconcile_to_bill, reconciliation_markdown
from cost_pipeline.lib.lake import Lake

BILL_RECONCILES = dg.AssetCheckSpec(
    "cost_lines_match_bill",
    asset="bill_totals",
    blocking=True,
    description=(
        "Per source, billing period and currency, cost_lines of every materialized day add up exactly (lines, billed and "
        "effective cost, all 12 decimal places) to the current delivery's totals; no line is dated before the first partition."
    ),
)


def bill_reconciliation_result(lake: Lake, bill: pl.DataFrame, first_day: dt.date, sources: list[str]) -> dg.AssetCheckResult:
    """From the lake's files, so the check sees exactly what readers will see (each day's lines read
    again whenever its file changed: :func:`held_totals`)."""
    table = reconcile_to_bill(bill, held_totals(lake), lake.days("cost_lines"), first_day, sources)
    bad = table.filter(pl.col("status").is_in(["off", "unlandable"]))
    problems = [
        f"{r['source']} {r['billing_period']} {r['currency']}: "
        + (f"cost_lines differ from the bill by {r['difference']} effective, {r['lake_lines'] - r['held_bill_lines']} line(s) "
           f"(first day off {r['first_off_day']})" if r["status"] == "off"
           else f"{r['unlandable_lines']} line(s) dated before partitions_start_date {first_day} can never land")
        for r in bad.iter_rows(named=True)
    ]
    return dg.AssetCheckResult(
        check_name=BILL_RECONCILES.name,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems)[:2000] or None,
        metadata={
            "periods_checked": table.height,
            "periods_off": bad.height,
            "periods_pending": table.filter(pl.col("status") == "pending").height,
            "by_period": dg.MetadataValue.md(reconciliation_markdown(table)),
        },
    )

