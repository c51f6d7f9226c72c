"""What the Dagster catalog shows before anything runs: column descriptions, table URIs, owners,
code versions and the automation that keeps downstream tables following their upstream days."""

from __future__ import annotations

import dagster as dg
import polars as pl

from cost_pipeline.config import Settings
from cost_pipeline.lib.allocate import ALLOCATED_SCHEMA
from cost_pipeline.lib.anomalies import ANOMALY_SCHEMA
from cost_pipeline.lib.billing.schema import COST_LINES_SCHEMA
from cost_pipeline.lib.lake import Lake

CODE_VERSION = "0.4"  # bump when a table's logic changes; rule-dependent tables use the rules' hash instead

COLUMNS: dict[str, str] = {
    "date": "UTC usage day (the partition)",
    "provider": "aws, gcp, azure or the FOCUS provider name",
    "source": "billing source name from the config",
    "billing_period": "invoice month whose current delivery holds the line",
    "billing_account_id": "payer / billing account",
    "sub_account_id": "usage account, project or subscription",
    "line_item_id": "the line's id within its delivery (content hash for providers without one)",
    "charge_type": "provider line type (Usage, SavingsPlanCoveredUsage, Tax, ...)",
    "charge_category": "FOCUS ChargeCategory",
    "service": "provider service / product code",
    "resource_id": "resource the charge is for",
    "usage_quantity": "usage amount in the pricing unit",
    "billed_cost": "invoiced cost, exact Decimal(38,12)",
    "effective_cost": "amortized cost (Savings Plans, reservations, credits applied), exact",
    "currency": "ISO 4217 billing currency; never summed across currencies",
    "is_final": "true once the provider has invoiced the line (estimates may be restated)",
    "tags": "raw provider tags as delivered (untrusted)",
    "source_file": "the delivered file the line came from",
    "tag_set": "64-bit hash of the line's tags map; the map itself is in the tag_sets table (join on date, tag_set)",
    "team": "ml-team after normalization and virtual tags; __unattributed__ for quarantined spend",
    "project": "ml-project",
    "workload_type": "ml-workload-type",
    "environment": "ml-environment",
    "experiment_id": "ml-experiment-id (training run)",
    "allocation": "direct, shared (a pool split by its driver) or unattributed",
    "pool": "shared pool name for shared rows",
    "amount": "exact amount, Decimal(38,12); rounded to cents only in reports",
    "rules_version": "hash of the tagging and allocation rules that produced the row",
    "reason": "why the row is unattributed (quarantine reason, no_usage:<pool>)",
    "tag_source": "tag, or the virtual-tag rules that filled the tags",
    "anomaly_id": "stable id of the anomaly episode",
    "scope": "team or project",
    "kind": "spike, level_shift or new_spend",
    "observed": "the day's cost in scope",
    "expected": "baseline: median of the same weekday over four weeks",
    "score": "robust z-score (median absolute deviation)",
    "drivers": "JSON: top contributors by share of the increase",
    "suppressed": "why it is not alerted (rules change), or empty",
}
TABLES: dict[str, dict[str, pl.DataType]] = {
    # the tags map is stored once per distinct map, in tag_sets (lib/billing/write_day.py)
    "cost_lines": {**{c: t for c, t in COST_LINES_SCHEMA.items() if c != "tags"}, "tag_set": pl.UInt64()},
    "allocated_costs": ALLOCATED_SCHEMA,
    "anomalies": ANOMALY_SCHEMA,
}
FOLLOWERS = {  # downstream tables that recompute when their upstream days change
    "team_daily_costs", "team_cost_detail", "anomalies", "slack_notifications", "team_months", "experiment_costs",
    "pool_shares", "untagged_by_account", "dashboards", "chargeback_statements", "team_reports",
}


def table_schema(table: str) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype), description=COLUMNS.get(name)) for name, dtype in TABLES[table].items()])


def describe(spec: dg.AssetSpec, settings: Settings, rule_dependent: set[str]) -> dg.AssetSpec:
    """Owners from ``operations.owners``, table URI and columns, code version, automation."""
    name = spec.key.to_user_string()
    lake = Lake.from_settings(settings)
    metadata = {**spec.metadata, "dagster/uri": lake.location(name), "dagster/table_name": f"cost_lake.{name}"}
    if name in TABLES:
        metadata["dagster/column_schema"] = table_schema(name)
    return spec.replace_attributes(
        owners=settings.operations.owners or spec.owners,
        metadata=metadata,
        code_version=settings.rules_version if name in rule_dependent else CODE_VERSION,
        automation_condition=dg.AutomationCondition.eager() if name in FOLLOWERS else spec.automation_condition,
    )
