"""Partitioned asset checks with one result per day, reported by the asset for every day it writes
(also inside a range run, where Dagster itself could not give a check a partition) and executable
alone for one partition from the UI."""


import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from cost_pipeline.config import Settings
from cost_pipeline.defs.partitions import DAILY, partition_days
from cost_pipeline.defs.resources import LakeResource, PipelineConfig
from cost_pipeline.lib.lake import Lake

Outcome = tuple[bool, dict, str]  # passed, metadata, one-line description (shown in the UI and the CLI)


@dataclass(frozen=True)
class DayCheck:
    asset: str
    name: str
    description: str
    evaluate: Callable[[Lake, Settings, dt.date], Outcome]
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
    blocking: bool = False  # a failed day stops the tables downstream

    def evaluations(self, lake: Lake, settings: Settings, days: list[dt.date]) -> list[dg.AssetCheckEvaluation]:
        out = []
        for day in days:
            passed, metadata, text = self.evaluate(lake, settings, day)
            out.append(dg.AssetCheckEvaluation(asset_key=dg.AssetKey(self.asset), check_name=self.name, passed=passed, metadata=metadata,
                                               severity=self.severity, blocking=self.blocking, partition=day.isoformat(),
                                               description=f"{day}: {text}"))
        return out

    def definition(self) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=self.asset, name=self.name, description=self.description, partitions_def=DAILY, blocking=self.blocking)
        def check(context: dg.AssetCheckExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource) -> dg.AssetCheckResult:
            lake, settings = cost_lake.lake(), pipeline.settings()
            outcomes = [self.evaluate(lake, settings, day) for day in partition_days(context.op_execution_context)]
            return dg.AssetCheckResult(passed=all(o[0] for o in outcomes), severity=self.severity,
                                       metadata=outcomes[0][1] if len(outcomes) == 1 else {"days": len(outcomes)},
                                       description="; ".join(o[2] for o in outcomes if not o[0])[:2000] or outcomes[0][2])

        return check
