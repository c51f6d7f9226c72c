"""The ``usage`` table: Prometheus samples per day, from extract files or a live Prometheus."""

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import polars as pl

from cost_pipeline.config import Settings
from cost_pipeline.defs.failures import input_errors_as_failures
from cost_pipeline.defs.metadata import column_schema, content_version
from cost_pipeline.defs.partitions import BACKFILL_POLICY, DAILY, partition_days
from cost_pipeline.defs.resources import BillingStorage, LakeResource, PipelineConfig
from cost_pipeline.defs.usage.checks import USAGE_COVERS_POOLS
from cost_pipeline.lib.billing.fingerprint import day_fingerprint, sink_fingerprinted
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.extracts import Extract, stage_extracts, stage_local_extracts
from cost_pipeline.lib.lake import PARQUET, Lake
from cost_pipeline.lib.prometheus import query_range_day, window_file
from cost_pipeline.lib.usage import empty_parts

RAW_TABLE = "usage_raw"


def _live(settings: Settings, lake: Lake, day: dt.date, work: Path, how: dict[str, str]) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """Query each configured query once per day; later reruns reuse the archived answers. Each answer
    is parsed from a local copy like an extract file (streamed when large), its samples staged in ``work``."""
    extracts = []
    (work / "raw").mkdir(parents=True, exist_ok=True)
    for name, query in settings.usage.queries.items():
        local = work / "raw" / f"{name}.json"  # the answer never held in memory: a 282 MB body stays on disk
        files = _archived(lake, day, local)
        if files is None:
            files = query_range_day(settings.usage.prometheus_url, query, day, settings.usage.step_seconds, settings.usage.timeout_seconds, local)
            for file in files:
                lake.write_file(RAW_TABLE, day, file.name, file)
            if len(files) > 1:  # last: a day's windows are reused only once all of them are archived
                lake.write_file(RAW_TABLE, day, f"{local.name}.parts", str(len(files)).encode())
        source = lake.location(RAW_TABLE, f"date={day}", local.name)
        extracts.append(Extract(name, files[0], source, sum(f.stat().st_size for f in files), tuple(files) if len(files) > 1 else ()))
    return stage_local_extracts(extracts, day, work, _stream_above(settings), how)


def _archived(lake: Lake, day: dt.date, local: Path) -> list[Path] | None:
    """A query's archived answer copied to ``local`` (or its windows beside it, see
    :func:`lib.prometheus.window_file`), or None if the day has none yet."""
    if lake.fetch_file(RAW_TABLE, day, local.name, local):
        return [local]
    count = local.with_name(f"{local.name}.parts")
    if not lake.fetch_file(RAW_TABLE, day, count.name, count):
        return None
    windows = count.read_text().strip()
    if not windows.isdigit():
        raise InputError(lake.location(RAW_TABLE, f"date={day}", count.name), f"expected the number of archived windows, found {windows[:40]!r}")
    files = [window_file(local, i) for i in range(int(windows))]
    for file in files:
        if not lake.fetch_file(RAW_TABLE, day, file.name, file):
            raise InputError(lake.location(RAW_TABLE, f"date={day}", file.name), "an archived window of the day's answer is missing")
    return files


def _stream_above(settings: Settings) -> int:
    return int(settings.usage.stream_documents_above_mb * 2**20)


@dg.asset(partitions_def=DAILY, backfill_policy=BACKFILL_POLICY, group_name="usage", kinds={"prometheus", "parquet"})
def usage(context: dg.AssetExecutionContext, pipeline: PipelineConfig, cost_lake: LakeResource, billing: BillingStorage):
    """Usage samples (query, series, timestamp, value) that drive shared-pool allocation, and each
    series' labels in ``usage_series`` (joined on date, query, series).

    With ``usage.prometheus_url`` the raw responses are archived under ``usage_raw/`` in the lake, so
    a day is recomputed from exactly the data first used, even after Prometheus has dropped it.
    """
    settings = pipeline.settings()
    lake = cost_lake.lake()
    fingerprints = []
    # a failed range leaves every earlier day of both tables as it was
    with lake.staging("usage") as staging, lake.staging("usage_series") as series_staging:
        for day in partition_days(context):
            extracts = staging.folder / f"extracts-{day}"  # each extract's samples, until the day is written
            how: dict[str, str] = {}  # how each query's extract was read
            with input_errors_as_failures():
                if settings.usage.prometheus_url:
                    points, series = _live(settings, lake, day, extracts, how)
                elif settings.usage.extracts_uri:
                    storage = billing.for_uri(settings.usage.extracts_uri, settings.usage.endpoint_url)
                    points, series = stage_extracts(settings.usage.extracts_uri, day, extracts, storage, _stream_above(settings), how)
                else:
                    points, series = empty_parts()
            staged, path = staging.reserve(day)  # a scan of the extracts' samples is streamed to the day's file
            written_fingerprint = sink_fingerprinted(points, staged, per_file=["query"], **PARQUET)
            shutil.rmtree(extracts, ignore_errors=True)
            series_staging.write_day(day, series)
            written = staging.scan(day)
            fingerprints.append(f"{written_fingerprint}/{day_fingerprint(series)}")
            per_query = dict(series.group_by("query").agg(pl.len()).sort("query").iter_rows())
            context.add_asset_metadata(
                {
                    "dagster/row_count": written.select(pl.len()).collect().item(),
                    "dagster/column_schema": column_schema(written.collect_schema()),
                    "path": dg.MetadataValue.path(str(path)),
                    "series_per_query": dg.MetadataValue.json(per_query),
                    # split: as Prometheus writes it; converted / in memory when large: 3-4 times as slow
                    "extracts_read": dg.MetadataValue.json(dict(sorted(how.items()))),
                    "source": "prometheus" if settings.usage.prometheus_url else "extracts",
                    "fingerprint": fingerprints[-1],
                },
                partition_key=day.isoformat(),
            )
    yield dg.MaterializeResult(data_version=content_version(fingerprints))
    yield from USAGE_COVERS_POOLS.evaluations(lake, settings, partition_days(context))
