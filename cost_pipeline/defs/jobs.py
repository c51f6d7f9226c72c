"""Jobs and the daily schedule: the daily tables for a day (or a range), then the report folder."""

from __future__ import annotations

import dagster as dg

from cost_pipeline.defs.partitions import DAILY

# what the tagging and allocation rules read but do not decide: a rules change keeps them (`run --rules-only`)
RULES_INPUTS = ["cost_lines", "usage"]
DAILY_ASSETS = ["cost_lines", "usage", "untagged_spend", "tag_compliance", "allocated_costs", "team_daily_costs", "team_cost_detail", "anomalies", "slack_notifications"]

daily_costs_job = dg.define_asset_job(
    "daily_costs_job",
    # the per-day checks are reported by the assets themselves (one result per day, also in ranges)
    selection=dg.AssetSelection.assets(*DAILY_ASSETS).without_checks(),
    partitions_def=DAILY,
    description="Every daily table for the chosen day(s); ranged runs are single-run backfills.",
)
reports_job = dg.define_asset_job(
    "reports_job",
    selection=dg.AssetSelection.assets(
        "bill_totals", "team_months", "experiment_costs", "pool_shares", "untagged_by_account", "dashboards", "chargeback_statements", "team_reports"
    ),
    description="The bill reconciliation, report tables, dashboards, statements and the summary, over every day in the lake.",
)

# Billing exports land several times a day; running at 06:00 UTC covers yesterday with the data AWS
# has delivered overnight (restatements are picked up by re-running the affected days).
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_costs_job, hour_of_day=6,
    description="06:00 UTC: yesterday's partition of every daily table, with the data the providers delivered overnight.",
)
