"""Conservation: allocation neither creates nor loses money, per day and currency, exactly.

A partitioned check: one result per day. ``allocated_costs`` reports it for every day it writes
(blocking: a failed day stops the tables downstream), and the check also runs on its own for one
partition (the UI's Execute button, or after repairing a day by hand).
"""


import datetime as dt

import dagster as dg
import polars as pl

from cost_pipeline.defs.partitions import DAILY, partition_days
from cost_pipeline.defs.resources import LakeResource, PipelineConfig
from cost_pipeline.lib.allocate import reconcile
from cost_pipeline.lib.lake import Lake

NAME = "allocation_conserves_cost_lines"
DESCRIPTION = "Per day and currency, sum(allocated_costs.amount) == sum(cost_lines.effective_cost), all 12 decimal places."


def conservation(lake: Lake, day: dt.date) -> tuple[bool, dict]:
    """Re-read both tables from the lake, so the check sees exactly what readers will see."""
    table = reconcile(lake.scan_days("allocated_costs", [day]).select("date", "currency", "amount").collect(),
                      lake.scan_days("cost_lines", [day]).select("date", "currency", "effective_cost").collect())
    off = table.filter(pl.col("allocated") != pl.col("billed"))
    return off.is_empty(), {
        "currencies": table.height,
        "off": dg.MetadataValue.md("\n".join(f"- {r['currency']}: {r['difference']}" for r in off.iter_rows(named=True)) or "none"),
    }


def conservation_evaluations(lake: Lake, days: list[dt.date]) -> list[dg.AssetCheckEvaluation]:
    out = []
    for day in days:
        passed, metadata = conservation(lake, day)
        out.append(dg.AssetCheckEvaluation(asset_key=dg.AssetKey("allocated_costs"), check_name=NAME, passed=passed, metadata=metadata,
                                           severity=dg.AssetCheckSeverity.ERROR, blocking=True, partition=day.isoformat(),
                                           description=None if passed else f"{day}: allocated_costs differ from cost_lines"))
    return out


@dg.asset_check(asset="allocated_costs", name=NAME, description=DESCRIPTION, partitions_def=DAILY, blocking=True)
def allocation_conserves_cost_lines(context: dg.AssetCheckExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource) -> dg.AssetCheckResult:
    lake = cost_lake.lake()
    results = [conservation(lake, day) for day in partition_days(context.op_execution_context)]
    return dg.AssetCheckResult(passed=all(p for p, _ in results), metadata=results[0][1] if len(results) == 1 else {"days": len(results)})
