"""The ``cost_lines`` table and the ``bill_totals`` it must add up to."""

import dagster as dg
import polars as pl

from cost_pipeline.defs.billing.checks import BILL_RECONCILES, bill_reconciliation_result
from cost_pipeline.defs.catalog import TABLES
from cost_pipeline.defs.failures import input_errors_as_failures
from cost_pipeline.defs.metadata import column_schema, content_version, money_totals
from cost_pipeline.defs.partitions import BACKFILL_POLICY, DAILY, partition_days
from cost_pipeline.defs.resources import BillingStorage, LakeResource, PipelineConfig
from cost_pipeline.lib.billing.fingerprint import fingerprint_from
from cost_pipeline.lib.billing.sources import TOTALS_SCHEMA, bill_totals, explain_unreadable, refuse_bad_sums, source_day
from cost_pipeline.lib.billing.totals import totals_markdown
from cost_pipeline.lib.billing.write_day import write_cost_lines_day


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=BACKFILL_POLICY,
    group_name="billing",
    kinds={"polars", "parquet"},
)
def cost_lines(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource, billing: BillingStorage) -> dg.MaterializeResult:
    """Every charge of a UTC day, FOCUS-aligned, with billed and effective (amortized) cost.

    Each day gathers the lines of every current delivery whose usage started that day, whichever
    billing period delivered them. Days are staged and replace the lake only when every day of the
    run was read and validated, so a bad file leaves all previously materialized days untouched.
    Each line carries ``tag_set`` (a hash of its tags map) and the lake's ``tag_sets`` table keeps
    each distinct map of the day once: attribution classifies those, not every line.
    """
    settings = pipeline.settings()
    lake = cost_lake.lake()
    rows = 0
    empty_days, last_with_data, fingerprints = [], None, []
    with lake.staging("cost_lines") as staging, lake.staging("tag_sets") as tag_set_stage:
        for day in partition_days(context):
            staged_path, path = staging.reserve(day)
            with input_errors_as_failures():
                # amounts and currencies are checked from the write pass's own sums: one evaluation of the
                # amortized cost instead of two; a failed check re-reads the files one by one to name one
                plans = [source_day(s, day, billing.for_source(s), sums_checked=True) for s in settings.billing_sources]
                try:
                    sums, tag_sets = write_cost_lines_day(pl.concat(plans), staged_path)
                except pl.exceptions.PolarsError:
                    explain_unreadable(settings.billing_sources, day, billing.for_source)
                    raise
                refuse_bad_sums(sums, settings.billing_sources, day, billing.for_source)
            tag_set_stage.write_day(day, tag_sets)
            per_source = dict(sums.group_by("source").agg(pl.col("fp_lines").sum()).iter_rows())
            rows += sum(per_source.values())
            metadata = {
                "dagster/row_count": sum(per_source.values()),
                "dagster/column_schema": column_schema(pl.Schema(TABLES["cost_lines"])),
                "path": dg.MetadataValue.path(path),
                **money_totals(sums, ["billed_cost", "effective_cost"]),
            }
            total, final = sum(per_source.values()), int(sums["final"].sum())
            metadata["final %"] = dg.MetadataValue.float(round(100 * final / total, 2) if total else 0.0)
            metadata["final"] = bool(total) and final == total
            metadata["tag_sets"] = tag_sets.height
            empty = [s.name for s in settings.billing_sources if not per_source.get(s.name)]
            metadata["sources_without_data"] = ", ".join(empty) or "none"
            for source in settings.billing_sources:
                metadata[f"lines/{source.name}"] = per_source.get(source.name, 0)
                metadata[f"fingerprint/{source.name}"] = fingerprint_from(sums.filter(pl.col("source") == source.name))
            fingerprints.append(",".join(str(metadata[f"fingerprint/{s.name}"]) for s in settings.billing_sources))
            if not per_source:
                empty_days.append(day)
            else:
                last_with_data = day
            if empty:
                context.log.warning(f"{day}: no lines from {', '.join(empty)} (no current delivery holds this day)")
            context.add_asset_metadata(metadata, partition_key=day.isoformat())
        # days after the last day with any line are not delivered yet (a gap inside the range is only warned about)
        undelivered = [d.isoformat() for d in empty_days if last_with_data is None or d > last_with_data]
        if undelivered:  # raised inside the staging block: no day of the run replaces the lake
            raise dg.Failure(
                description=f"no billing source has any line for {', '.join(undelivered[:10])}{' ...' if len(undelivered) > 10 else ''}: "
                f"not delivered yet? Nothing was written; run the days that have data.",
                allow_retries=False,
            )
    return dg.MaterializeResult(metadata={"days_in_run": len(partition_days(context)), "lines_in_run": rows},
                                data_version=content_version(fingerprints))


@dg.asset(
    name="bill_totals",
    group_name="billing",
    kinds={"polars", "parquet"},
    deps=["cost_lines"],
    check_specs=[BILL_RECONCILES],
)
def bill_totals_table(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource, billing: BillingStorage) -> dg.MaterializeResult:
    """Per source, billing period and usage day: lines, billed and effective cost of the current delivery,
    summed from the delivered files themselves. ``cost_lines`` must add up to it exactly."""
    settings = pipeline.settings()
    lake = cost_lake.lake()
    known = lake.read_table("bill_totals")
    with input_errors_as_failures():
        frames = [bill_totals(s, billing.for_source(s), known) for s in settings.billing_sources]
    totals = pl.concat(frames) if frames else pl.DataFrame(schema=TOTALS_SCHEMA)
    path = lake.write_table("bill_totals", totals)
    reconciled = [s.name for s in settings.billing_sources if not s.uri.startswith("bq://")]
    result = bill_reconciliation_result(lake, totals, settings.partitions_start_date, reconciled)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": totals.height,
            "path": dg.MetadataValue.path(path),
            "periods": dg.MetadataValue.md(totals_markdown(totals)),
        },
        check_results=[result],
    )
