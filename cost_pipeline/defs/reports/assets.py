"""Team-facing tables and files: daily costs per team, report tables, dashboards, statements, the summary."""

import dagster as dg

from cost_pipeline.defs.metadata import day_metadata
from cost_pipeline.defs.partitions import BACKFILL_POLICY, DAILY, partition_days
from cost_pipeline.defs.reports.checks import TEAM_DAILY_ADDS_UP, TEAM_DETAIL_ADDS_UP
from cost_pipeline.defs.resources import LakeResource, PipelineConfig
from cost_pipeline.lib.markdown import md_table
from cost_pipeline.lib.month_close import close_month
from cost_pipeline.lib.report_files import write_reports
from cost_pipeline.lib.report_outputs import dashboard_files, load_tables, statement_files
from cost_pipeline.lib.report_tables import team_cost_detail as detail_of
from cost_pipeline.lib.reports import team_daily_costs as daily_costs_of


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=BACKFILL_POLICY,
    group_name="reports",
    kinds={"polars", "parquet"},
    deps=["allocated_costs", "untagged_spend"],
)
def team_daily_costs(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource):
    """What each team cost each day: direct, shared and unattributed, plus a cent total that adds up."""
    lake = cost_lake.lake()
    with lake.staging("team_daily_costs") as staging:
        for day in partition_days(context):
            table = daily_costs_of(lake.scan_days("allocated_costs", [day]).collect())
            path = staging.write_day(day, table)
            context.add_asset_metadata(day_metadata(table, str(path), ["total"]), partition_key=day.isoformat())
    yield dg.MaterializeResult()
    yield from TEAM_DAILY_ADDS_UP.evaluations(lake, pipeline.settings(), partition_days(context))


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=BACKFILL_POLICY,
    group_name="reports",
    kinds={"polars", "parquet"},
    deps=["allocated_costs"],
)
def team_cost_detail(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource):
    """team × day × project × workload type × environment × experiment × allocation/pool: what dashboards
    filter and statements group, with the rules version that produced each row."""
    lake = cost_lake.lake()
    with lake.staging("team_cost_detail") as staging:
        for day in partition_days(context):
            table = detail_of(lake.scan_days("allocated_costs", [day]))
            path = staging.write_day(day, table)
            context.add_asset_metadata(day_metadata(table, str(path), ["amount"]), partition_key=day.isoformat())
    yield dg.MaterializeResult()
    yield from TEAM_DETAIL_ADDS_UP.evaluations(lake, pipeline.settings(), partition_days(context))


REPORT_TABLES = {
    "team_months": "team × month: month to date, the previous month and the change, in cents that add up per month.",
    "experiment_costs": "One row per training run (ml-experiment-id): team, project, first and last day, days, direct and shared cost.",
    "pool_shares": "month × shared pool × team: each team's share, the idle part and the driver that decided it.",
    "untagged_by_account": "month × account × reason: quarantined spend, and the team the account belongs to.",
}


@dg.multi_asset(
    specs=[dg.AssetSpec(name, description=text, group_name="reports", kinds={"polars", "parquet"}, deps=["team_cost_detail", "team_daily_costs", "untagged_spend"])
           for name, text in REPORT_TABLES.items()],
    name="report_tables",
)
def report_tables(pipeline: PipelineConfig, cost_lake: LakeResource):
    lake = cost_lake.lake()
    tables = load_tables(lake, pipeline.settings())
    frames = {"team_months": tables.months, "experiment_costs": tables.experiments, "pool_shares": tables.pools, "untagged_by_account": tables.untagged}
    for name, frame in frames.items():
        path = lake.write_table(name, frame)
        shown = frame.select([c for c in frame.columns if c not in ("total", "amount", "direct", "shared", "unattributed", "previous_total", "pool_total")]).head(15)
        yield dg.MaterializeResult(asset_key=name, metadata={
            "dagster/row_count": frame.height,
            "path": dg.MetadataValue.path(path),
            "preview": dg.MetadataValue.md(md_table(shown.columns, [list(r) for r in shown.iter_rows()])),
        })


@dg.asset(group_name="reports", kinds={"html", "vega"}, deps=list(REPORT_TABLES))
def dashboards(pipeline: PipelineConfig, cost_lake: LakeResource) -> dg.MaterializeResult:
    """One self-contained HTML dashboard per team (only its own rows) and the platform dashboard."""
    lake, settings = cost_lake.lake(), pipeline.settings()
    tables = load_tables(lake, settings)
    files = dashboard_files(tables, settings)  # every page rendered before the first is written
    written = {name: lake.write_file("reports/dashboards", None, name.rpartition("/")[2], body) for name, body in files.items()}
    return dg.MaterializeResult(metadata={
        "pages": len(written),
        "platform": dg.MetadataValue.path(written["dashboards/platform.html"]),
        "dashboards": dg.MetadataValue.md(md_table(["page", "file"], [[n.rpartition("/")[2], p] for n, p in sorted(written.items())])),
        "data_through": tables.freshness.last_day,
        "rules_versions": ", ".join(tables.freshness.rules_versions),
    })


@dg.asset(group_name="reports", kinds={"csv", "html"}, deps=["team_cost_detail"])
def chargeback_statements(pipeline: PipelineConfig, cost_lake: LakeResource) -> dg.MaterializeResult:
    """Per team and month: lines by project, workload type and environment, shared pools on their own
    lines; closed months are never rewritten and later changes land as adjustments on the next open month."""
    lake, settings = cost_lake.lake(), pipeline.settings()
    result = statement_files(lake, lake.scan("team_cost_detail").collect(), settings)
    for path, body in result.files.items():
        folder, _, name = path.rpartition("/")
        lake.write_file(folder, None, name, body)
    summary = result.summary
    return dg.MaterializeResult(metadata={
        "mode": settings.reports.mode,
        "files_written": len(result.files),
        "folder": dg.MetadataValue.path(lake.location("reports", "statements")),
        "months": dg.MetadataValue.md(md_table(summary.columns, [list(r) for r in summary.iter_rows()])),
    })


@dg.asset(group_name="reports", kinds={"csv", "markdown"}, deps=["team_daily_costs", "untagged_spend"])
def team_reports(pipeline: PipelineConfig, cost_lake: LakeResource) -> dg.MaterializeResult:
    """The report folder: an organisation summary and one CSV per team holding only that team's rows."""
    written = write_reports(cost_lake.lake(), pipeline.settings().partitions_start_date)
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.path(written.summary),
            "teams": len(written.team_files),
            "report_dir": dg.MetadataValue.path(written.folder),
            "preview": dg.MetadataValue.md(written.summary_text[:4000]),
        }
    )


class CloseMonthConfig(dg.Config):
    month: str  # YYYY-MM
    allow_missing_days: bool = False


@dg.op
def close_month_op(context: dg.OpExecutionContext, config: CloseMonthConfig, pipeline: PipelineConfig, cost_lake: LakeResource) -> None:
    """Freeze a month's statements (the snapshot in ``closed_statements`` is the issued version)."""
    written = close_month(cost_lake.lake(), pipeline.settings(), config.month, config.allow_missing_days)
    context.log.info(f"closed {config.month}: {len(written)} statement file(s)")


close_month_job = dg.GraphDefinition(name="close_month_job", node_defs=[close_month_op]).to_job(
    description="Close a month: its chargeback statements become final; later changes appear as adjustments on the next open month.",
)
