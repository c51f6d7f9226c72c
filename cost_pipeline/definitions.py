"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from __future__ import annotations

import dagster as dg

from cost_pipeline.config import Settings, load_settings
from cost_pipeline.defs.alerts.assets import anomalies, slack_notifications
from cost_pipeline.defs.allocation.checks import CONSERVES
from cost_pipeline.defs.billing.assets import bill_totals_table, cost_lines
from cost_pipeline.defs.billing.sensors import delivery_sensors
from cost_pipeline.defs.catalog import describe
from cost_pipeline.defs.compliance.assets import attribution
from cost_pipeline.defs.compliance.checks import untagged_share_below_error, untagged_share_below_warn
from cost_pipeline.defs.jobs import daily_costs_job, daily_schedule, reports_job
from cost_pipeline.defs.reports.assets import (
    chargeback_statements,
    close_month_job,
    dashboards,
    report_tables,
    team_cost_detail,
    team_daily_costs,
    team_reports,
)
from cost_pipeline.defs.reports.checks import TEAM_DAILY_ADDS_UP, TEAM_DETAIL_ADDS_UP, team_months_equal_allocated_costs
from cost_pipeline.defs.resources import resources_for
from cost_pipeline.defs.usage.assets import usage
from cost_pipeline.defs.usage.checks import USAGE_COVERS_POOLS

# Downstream tables follow their upstream days (AutomationCondition.eager) while this sensor runs.
FOLLOW_UPSTREAM = dg.AutomationConditionSensorDefinition(
    "follow_upstream_days", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    description="Recomputes team tables, reports, dashboards, statements and digests when their upstream days change.",
)

# Tables whose content depends on the tagging and allocation rules: their code version is the
# rules' hash, so changing a rule shows every materialized day of them as stale in the UI.
RULE_DEPENDENT = (attribution,)


def build_defs(settings: Settings) -> dg.Definitions:
    rule_dependent = {key.to_user_string() for asset in RULE_DEPENDENT for key in asset.keys}
    assets = [cost_lines, bill_totals_table, usage, *RULE_DEPENDENT, team_daily_costs, team_cost_detail, anomalies, slack_notifications,
              report_tables, dashboards, chargeback_statements, team_reports]
    return dg.Definitions(
        assets=[asset.map_asset_specs(lambda spec: describe(spec, settings, rule_dependent)) for asset in assets],
        asset_checks=[untagged_share_below_warn, untagged_share_below_error, team_months_equal_allocated_costs,
                      *(c.definition() for c in (CONSERVES, USAGE_COVERS_POOLS, TEAM_DAILY_ADDS_UP, TEAM_DETAIL_ADDS_UP))],
        jobs=[daily_costs_job, reports_job, close_month_job],
        schedules=[daily_schedule],
        sensors=[*delivery_sensors(settings.billing_sources), FOLLOW_UPSTREAM],
        resources=resources_for(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded once per code-location load: the settings read here are the ones every run uses."""
    return build_defs(load_settings())
