"""One sensor per billing source: new or re-delivered files → runs for exactly the changed days."""

import datetime as dt

import dagster as dg
import polars as pl

from cost_pipeline.config import BillingSource
from cost_pipeline.defs.jobs import daily_costs_job
from cost_pipeline.defs.partitions import DAILY
from cost_pipeline.defs.resources import BillingStorage, LakeResource, PipelineConfig
from cost_pipeline.lib.billing.fingerprint import day_fingerprint
from cost_pipeline.lib.billing.gcp import bigquery_changed_days
from cost_pipeline.lib.billing.sources import changed_days, read_source_day
from cost_pipeline.lib.lake import Lake

# Object stores and file systems can show a file with a modification time a little before the tick
# that first lists it; the cursor looks back this far, and fingerprints keep re-listed files harmless.
CURSOR_OVERLAP = dt.timedelta(minutes=10)


def _recorded_fingerprint(instance: dg.DagsterInstance, source: str, day: dt.date) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("cost_lines"), asset_partitions=[day.isoformat()]), limit=1
    ).records
    materialization = records[0].event_log_entry.asset_materialization if records else None
    if materialization is None:
        return None
    value = materialization.metadata.get(f"fingerprint/{source}")
    return value.value if value is not None else None


MAX_RETRIES = 3


def _retries(instance: dg.DagsterInstance, source: str, fresh: dict[str, str], content_fingerprints: bool = True) -> list[dg.RunRequest]:
    """Failed runs this sensor requested whose day still lacks their fingerprint: ask again (a new run
    key per attempt, so Dagster does not dedupe it), at most ``MAX_RETRIES`` times per delivery.
    ``fresh``: day -> fingerprint of this tick's requests; a newer delivery of the day wins.
    ``content_fingerprints``: False for BigQuery, whose "fingerprint" is the newest export time: only
    a later successful run of the same day and export settles it."""
    failed = instance.get_runs(filters=dg.RunsFilter(tags={"cost_pipeline/source": source}, statuses=[dg.DagsterRunStatus.FAILURE]), limit=50)
    out: dict[str, dg.RunRequest] = {}
    for run in failed:
        day, fingerprint = run.tags.get("dagster/partition"), run.tags.get("cost_pipeline/fingerprint")
        if not day or not fingerprint or fresh.get(day, fingerprint) != fingerprint or day in out:
            continue
        if content_fingerprints and _recorded_fingerprint(instance, source, dt.date.fromisoformat(day)) == fingerprint:
            continue
        attempts = instance.get_runs(filters=dg.RunsFilter(tags={"cost_pipeline/source": source, "dagster/partition": day,
                                                                  "cost_pipeline/fingerprint": fingerprint}))
        if any(r.status != dg.DagsterRunStatus.FAILURE for r in attempts) or len(attempts) > MAX_RETRIES:
            continue  # another attempt is queued, running or done; or we gave up (visible as failed runs)
        out[day] = dg.RunRequest(
            run_key=f"{source}:{day}:{fingerprint}:retry{len(attempts)}", partition_key=day,
            tags={"cost_pipeline/source": source, "cost_pipeline/fingerprint": fingerprint, "cost_pipeline/retry": str(len(attempts))},
        )
    return list(out.values())


def _recorded_days(lake: Lake, source: str) -> dict[str, set[dt.date]]:
    """The days each period's last seen delivery held (empty before the first bill_totals)."""
    totals = lake.read_table("bill_totals")
    if totals is None:
        return {}
    rows = totals.filter(pl.col("source") == source).select("billing_period", "date").unique()
    out: dict[str, set[dt.date]] = {}
    for period, day in rows.iter_rows():
        out.setdefault(period, set()).add(day)
    return out


def build_delivery_sensor(source: BillingSource) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{source.name.replace('-', '_')}_deliveries",
        job=daily_costs_job,
        minimum_interval_seconds=300,
        description=f"Watches {source.uri} ({source.format}) and re-runs the days whose charges changed.",
    )
    def delivery_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineConfig, cost_lake: LakeResource, billing: BillingStorage):
        storage = billing.for_source(source)
        since = dt.datetime.fromisoformat(context.cursor) - CURSOR_OVERLAP if context.cursor else None
        changed = storage.list(source.uri, since=since)
        if not changed:
            retries = _retries(context.instance, source.name, {})
            return retries or dg.SkipReason(f"no new files under {source.uri} since {since}")
        partitions = {dt.date.fromisoformat(k) for k in DAILY.get_partition_keys()}
        days = changed_days(source, changed, storage, _recorded_days(cost_lake.lake(), source.name))
        requests = []
        for day in sorted(days & partitions):
            fingerprint = day_fingerprint(read_source_day(source, day, storage))
            recorded = _recorded_fingerprint(context.instance, source.name, day)
            if fingerprint == recorded or (recorded is None and fingerprint == "empty"):
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"{source.name}:{day}:{fingerprint}",
                    partition_key=day.isoformat(),
                    tags={"cost_pipeline/source": source.name, "cost_pipeline/fingerprint": fingerprint},
                )
            )
        retries = _retries(context.instance, source.name, {r.partition_key: r.tags["cost_pipeline/fingerprint"] for r in requests})
        retried = {r.partition_key for r in retries}  # the failed run's key would be deduped: the retry replaces it
        requests = [r for r in requests if r.partition_key not in retried] + retries
        newest = max(f.modified for f in changed)
        context.update_cursor(newest.isoformat())
        context.log.info(f"{len(changed)} new file(s); {len(requests)} day(s) changed: {[r.partition_key for r in requests]}")
        return requests or dg.SkipReason(f"{len(changed)} new file(s), but no day's charges changed")

    return delivery_sensor


def build_bigquery_sensor(source: BillingSource) -> dg.SensorDefinition:
    """GCP keeps writing rows for past days into the export table: ask it which usage days received
    rows since the cursor (newest ``export_time`` seen) and re-run exactly those."""
    table = source.uri[len("bq://"):]

    @dg.sensor(
        name=f"{source.name.replace('-', '_')}_deliveries",
        job=daily_costs_job,
        minimum_interval_seconds=900,
        description=f"Watches {source.uri} (export_time) and re-runs the usage days that received rows.",
    )
    def bigquery_sensor(context: dg.SensorEvaluationContext, billing: BillingStorage):
        partitions = DAILY.get_partition_keys()
        since = dt.datetime.fromisoformat(context.cursor) if context.cursor else dt.datetime.combine(
            dt.date.fromisoformat(partitions[0]), dt.time(), tzinfo=dt.UTC)
        changed = bigquery_changed_days(table, since, billing.for_source(source).bigquery_client())
        keys = set(partitions)
        requests = [
            dg.RunRequest(run_key=f"{source.name}:{day}:{newest.isoformat()}", partition_key=day.isoformat(),
                          tags={"cost_pipeline/source": source.name, "cost_pipeline/new_rows": str(rows),
                                "cost_pipeline/fingerprint": f"exported-{newest.isoformat()}"})
            for day, newest, rows in changed if day.isoformat() in keys
        ]
        retries = _retries(context.instance, source.name, {r.partition_key: r.tags["cost_pipeline/fingerprint"] for r in requests},
                           content_fingerprints=False)
        retried = {r.partition_key for r in retries}
        requests = [r for r in requests if r.partition_key not in retried] + retries
        if changed:
            context.update_cursor(max(newest for _, newest, _ in changed).isoformat())
        return requests or dg.SkipReason(
            f"{len(changed)} day(s) received rows, none inside the partitions" if changed else f"no rows exported to {table} after {since.isoformat()}")

    return bigquery_sensor


def delivery_sensors(sources: list[BillingSource]) -> list[dg.SensorDefinition]:
    return [build_bigquery_sensor(s) if s.uri.startswith("bq://") else build_delivery_sensor(s) for s in sources]
