"""Team-facing tables and files: daily costs per team, and the report folder people open."""

import dagster as dg

from cost_pipeline.defs.metadata import day_metadata
from cost_pipeline.defs.partitions import DAILY, SINGLE_RUN, partition_days
from cost_pipeline.defs.resources import PipelineConfig
from cost_pipeline.lib.report_files import write_reports
from cost_pipeline.lib.reports import team_daily_costs as daily_costs_of


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    group_name="reports",
    kinds={"polars", "parquet"},
    deps=["allocated_costs", "untagged_spend"],
)
def team_daily_costs(context: dg.AssetExecutionContext, pipeline: PipelineConfig) -> dg.MaterializeResult:
    """What each team cost each day: direct, shared and unattributed, plus a cent total that adds up."""
    lake = pipeline.lake()
    with lake.staging("team_daily_costs") as staging:
        for day in partition_days(context):
            table = daily_costs_of(lake.scan_days("allocated_costs", [day]).collect())
            path = staging.write_day(day, table)
            context.add_asset_metadata(day_metadata(table, str(path), ["total"]), partition_key=day.isoformat())
    return dg.MaterializeResult()


@dg.asset(group_name="reports", kinds={"csv", "markdown"}, deps=["team_daily_costs", "untagged_spend"])
def team_reports(pipeline: PipelineConfig) -> dg.MaterializeResult:
    """The report folder: an organisation summary and one CSV per team holding only that team's rows."""
    written = write_reports(pipeline.lake(), pipeline.settings().partitions_start_date)
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.path(written.summary),
            "teams": len(written.team_files),
            "report_dir": dg.MetadataValue.path(written.folder),
            "preview": dg.MetadataValue.md(written.summary_text[:4000]),
        }
    )
