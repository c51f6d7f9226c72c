"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from __future__ import annotations

import dagster as dg

from cost_pipeline.defs.allocation.assets import allocated_costs
from cost_pipeline.defs.billing.assets import cost_lines
from cost_pipeline.defs.compliance.assets import tag_compliance, untagged_spend
from cost_pipeline.defs.jobs import daily_costs_job, daily_schedule, reports_job
from cost_pipeline.defs.reports.assets import team_daily_costs, team_reports
from cost_pipeline.defs.resources import PipelineConfig

defs = dg.Definitions(
    assets=[cost_lines, untagged_spend, tag_compliance, allocated_costs, team_daily_costs, team_reports],
    jobs=[daily_costs_job, reports_job],
    schedules=[daily_schedule],
    resources={"pipeline": PipelineConfig()},
)
