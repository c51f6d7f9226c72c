"""The ``cost_lines`` table and the ``bill_totals`` it must add up to."""

import dagster as dg
import polars as pl

from cost_pipeline.defs.billing.checks import BILL_RECONCILES, bill_reconciliation_result
from cost_pipeline.defs.catalog import TABLES
from cost_pipeline.defs.failures import input_errors_as_failures
from cost_pipeline.defs.metadata import column_schema, content_version, money_totals
from cost_pipeline.defs.partitions import BACKFILL_POLICY, DAILY, partition_days
from cost_pipeline.defs.resources import BillingStorage, LakeResource, PipelineConfig
from cost_pipeline.lib.billing.file_totals import FileSums, read_file_totals
from cost_pipeline.lib.billing.fingerprint import fingerprint_from
from cost_pipeline.lib.billing.sources import TOTALS_SCHEMA, batch_bytes, batch_files, bill_totals, day_batches, day_files
from cost_pipeline.lib.billing.totals import record_day_totals, totals_markdown
from cost_pipeline.lib.billing.write_day import ingest_days
from cost_pipeline.lib.overlap import IN_FLIGHT_BYTES, in_order

# days written in one pass when billing files hold many days (an export's month parts): each file is
# read once per batch instead of once per day. A batch keeps one Parquet writer per day open, each
# holding at most a row group (~130,000 lines): 30 days of 1.3 M lines in 8 month parts peaked at
# 1.36 GiB in one pass (1.8 s a day) and 1.28 GiB in two (2.5 s a day)
MAX_DAYS_PER_PASS = 31


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
    each distinct set of tags of the day once: attribution classifies those, not every line.
    """
    settings = pipeline.settings()
    lake = cost_lake.lake()
    rows = 0
    empty_days, last_with_data, fingerprints, all_sums = [], None, [], []
    with lake.staging("cost_lines") as staging, lake.staging("tag_sets") as tag_set_stage:
        with input_errors_as_failures():
            files = day_files(settings.billing_sources, partition_days(context), billing.for_source)
            batches = day_batches(settings.billing_sources, partition_days(context), billing.for_source, MAX_DAYS_PER_PASS, files)
        staged = {day: staging.reserve(day) for batch in batches for day in batch}
        file_sums = FileSums(read_file_totals(lake))

        def ingest(batch: list) -> tuple[pl.DataFrame, pl.DataFrame]:  # on a worker thread (lib/overlap)
            held = batch_files(batch, files)
            ingested = ingest_days(settings.billing_sources, batch, billing.for_source, {day: staged[day][0] for day in batch}, held)
            file_sums.add(held, billing.for_source)  # the bill side, while the files are at hand
            return ingested

        # a BigQuery day has no file size to go by: such runs ingest one batch at a time
        queried = any(s.uri.startswith("bq://") for s in settings.billing_sources)
        sizes = [IN_FLIGHT_BYTES if queried else batch_bytes(batch, files) for batch in batches]
        with (in_order(ingest, batches, sizes) as ingested,
              input_errors_as_failures()):
            for batch, (sums, tag_sets) in ingested:
                all_sums.append(sums)
                for day in batch:
                    day_tag_sets = tag_sets.filter(pl.col("date") == day).drop("date")
                    tag_set_stage.write_day(day, day_tag_sets)
                    day_sums = sums.filter(pl.col("date") == day)
                    rows += _report_day(context, settings, day, staged[day][1], day_sums, day_tag_sets, fingerprints)
                    if day_sums["fp_lines"].sum():
                        last_with_data = day
                    else:
                        empty_days.append(day)
        # days after the last day with any line are not delivered yet (a gap inside the range is only warned about)
        undelivered = [d.isoformat() for d in empty_days if last_with_data is None or d > last_with_data]
        if undelivered:  # raised inside the staging block: no day of the run replaces the lake
            raise dg.Failure(
                description=f"no billing source has any line for {', '.join(undelivered[:10])}{' ...' if len(undelivered) > 10 else ''}: "
                f"not delivered yet? Nothing was written; run the days that have data.",
                allow_retries=False,
            )
    try:  # caches: without them the reports read these days' lines and their billing files again
        if all_sums:
            record_day_totals(lake, pl.concat(all_sums), partition_days(context))
        file_sums.record(lake)
    except Exception as exc:  # noqa: BLE001 - the days are committed: storage errors of any kind only cost time later
        context.log.warning(f"the days' totals were not recorded ({type(exc).__name__}: {exc}); the reports will read their lines and files")
    return dg.MaterializeResult(metadata={"days_in_run": len(partition_days(context)), "lines_in_run": rows},
                                data_version=content_version(fingerprints))


def _report_day(context: dg.AssetExecutionContext, settings, day, path: str, sums: pl.DataFrame, tag_sets: pl.DataFrame,
                fingerprints: list[str]) -> int:
    """The day's materialization metadata (lines, money, fingerprints per source); returns its lines."""
    per_source = dict(sums.group_by("source").agg(pl.col("fp_lines").sum()).iter_rows())
    total, final = sum(per_source.values()), int(sums["final"].sum())
    metadata = {
        "dagster/row_count": total,
        "dagster/column_schema": column_schema(pl.Schema(TABLES["cost_lines"])),
        "path": dg.MetadataValue.path(path),
        **money_totals(sums, ["billed_cost", "effective_cost"]),
        "final %": dg.MetadataValue.float(round(100 * final / total, 2) if total else 0.0),
        "final": bool(total) and final == total,
        "tag_sets": tag_sets.height,
    }
    empty = [s.name for s in settings.billing_sources if not per_source.get(s.name)]
    metadata["sources_without_data"] = ", ".join(empty) or "none"
    for source in settings.billing_sources:
        metadata[f"lines/{source.name}"] = per_source.get(source.name, 0)
        metadata[f"fingerprint/{source.name}"] = fingerprint_from(sums.filter(pl.col("source") == source.name))
    fingerprints.append(",".join(str(metadata[f"fingerprint/{s.name}"]) for s in settings.billing_sources))
    if empty:
        context.log.warning(f"{day}: no lines from {', '.join(empty)} (no current delivery holds this day)")
    context.add_asset_metadata(metadata, partition_key=day.isoformat())
    return total


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
    known, file_sums, counts = lake.read_table("bill_totals"), read_file_totals(lake), {}
    with input_errors_as_failures():
        frames = [bill_totals(s, billing.for_source(s), known, file_sums, counts) for s in settings.billing_sources]
    totals = pl.concat(frames) if frames else pl.DataFrame(schema=TOTALS_SCHEMA)
    path = lake.write_table("bill_totals", totals)
    reconciled = [s.name for s in settings.billing_sources if not s.uri.startswith("bq://")]
    result = bill_reconciliation_result(lake, totals, settings.partitions_start_date, reconciled)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": totals.height,
            "path": dg.MetadataValue.path(path),
            "periods": dg.MetadataValue.md(totals_markdown(totals)),
            # changed deliveries' files read here, and those summed by cost_lines as it read them
            "files_read": counts.get("read", 0),
            "files_summed_by_cost_lines": counts.get("summed_before", 0),
        },
        check_results=[result],
    )
