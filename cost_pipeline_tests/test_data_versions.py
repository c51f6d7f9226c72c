"""Data versions come from content: a re-delivery with the same charges leaves downstream days fresh,
a changed cent marks them stale; and a run never writes rules other than those the UI shows."""

import shutil

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.temporal_context import TemporalContext
from dagster._time import get_current_datetime

from cost_pipeline.config import load_settings
from cost_pipeline.definitions import build_defs
from cost_pipeline.defs.resources import resources_for
from cost_pipeline_tests.conftest import START, write_config

DAY = START.isoformat()


def _status(defs: dg.Definitions, instance: dg.DagsterInstance, asset: str) -> StaleStatus:
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    return CachingStaleStatusResolver(instance, graph, loading_context=view).get_status(dg.AssetKey(asset), DAY)


def _data_version(instance: dg.DagsterInstance, asset: str) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.tags["dagster/data_version"]


def _day_file(sample):
    return next((sample / "billing" / "aws" / "data" / f"BILLING_PERIOD={START:%Y-%m}").glob(f"*{START.day:05d}.snappy.parquet"))


def test_an_unchanged_redelivery_keeps_downstream_fresh_and_a_changed_cent_does_not(tmp_path, sample_dir):
    sample = tmp_path / "sample"
    shutil.copytree(sample_dir, sample)
    config = write_config(tmp_path, sample)
    defs = build_defs(load_settings(config))
    resources = resources_for(load_settings(config))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("daily_costs_job").execute_in_process(instance=instance, partition_key=DAY, resources=resources).success
    first = _data_version(instance, "cost_lines")
    fingerprint = instance.get_latest_materialization_event(dg.AssetKey("cost_lines")).asset_materialization.metadata["fingerprint/aws-main"].value
    assert first == fingerprint and first.endswith(f"-{pq.read_metadata(_day_file(sample)).num_rows}")
    assert _status(defs, instance, "allocated_costs") == StaleStatus.FRESH

    cost_lines_only = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey("cost_lines")})
    # the provider re-delivers the day: same charges, other row order
    path = _day_file(sample)
    table = pq.read_table(path)
    pq.write_table(table.take(list(reversed(range(table.num_rows)))), path)
    assert cost_lines_only.execute_in_process(instance=instance, partition_key=DAY, resources=resources).success
    assert _data_version(instance, "cost_lines") == first
    assert _status(defs, instance, "allocated_costs") == StaleStatus.FRESH

    # ... and then restates one line by one cent
    costs = table["line_item_unblended_cost"].to_pylist()
    costs[0] += 0.01
    column = table.schema.get_field_index("line_item_unblended_cost")
    pq.write_table(table.set_column(column, "line_item_unblended_cost", pc.cast(costs, table.schema.field(column).type)), path)
    assert cost_lines_only.execute_in_process(instance=instance, partition_key=DAY, resources=resources).success
    assert _data_version(instance, "cost_lines") != first
    assert _status(defs, instance, "allocated_costs") == StaleStatus.STALE


def test_rules_edited_after_loading_fail_the_run_instead_of_writing_other_rules(tmp_path, sample_dir):
    config = write_config(tmp_path, sample_dir)
    defs = build_defs(load_settings(config))
    raw = yaml.safe_load(config.read_text())
    driver = next(p for p in raw["allocation"]["pools"] if p["driver"].get("idle"))["driver"]
    driver["idle"] = "owner" if driver["idle"] == "share" else "share"
    config.write_text(yaml.safe_dump(raw))
    result = defs.resolve_job_def("daily_costs_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key=DAY, raise_on_error=False)
    assert not result.success
    errors = [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    assert any("reload the code location" in m and str(config) in m for m in errors), errors
    assert not (tmp_path / "lake" / "cost_lines").exists()


def test_fingerprint_ignores_order_and_grouping_but_not_a_cent(sample_dir):
    """The fingerprint is summed while streaming (per source and currency in the ingest pass): any
    order and any grouping of the same lines give the same value; one cent more gives another."""
    from decimal import Decimal

    import polars as pl

    from cost_pipeline.lib.billing.fingerprint import content_hash, day_fingerprint, fingerprint_from, fingerprint_parts
    from cost_pipeline_tests.conftest import read_day

    lines = read_day("aws_cur2", str(sample_dir / "billing" / "aws"), START, "aws-main")
    whole = day_fingerprint(lines)
    assert whole.endswith(f"-{lines.height}") and lines.height > 300
    assert day_fingerprint(lines.sample(fraction=1.0, shuffle=True, seed=3)) == whole
    by_service = lines.group_by("service", "currency").agg(fingerprint_parts(content_hash(lines.schema)))
    assert by_service.height > 1 and fingerprint_from(by_service) == whole
    one_cent = lines.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.col("effective_cost") + Decimal("0.01"))
                                  .otherwise(pl.col("effective_cost")).alias("effective_cost"))
    assert day_fingerprint(one_cent) != whole
    assert day_fingerprint(lines.head(lines.height - 1)) != whole


def test_a_day_sunk_with_its_fingerprint_has_the_fingerprint_of_the_file_written(sample_dir, tmp_path):
    """The usage asset sinks a day and fingerprints it in one pass: the file holds every line, the
    columns sunk as Categoricals read back as strings everywhere, and the fingerprint is the one the
    written file gives when read back."""
    import polars as pl
    import pyarrow as pa

    from cost_pipeline.lib.billing.fingerprint import day_fingerprint, sink_fingerprinted
    from cost_pipeline_tests.conftest import read_day

    lines = read_day("aws_cur2", str(sample_dir / "billing" / "aws"), START, "aws-main").drop("tags")
    per_file = ["provider", "source", "service"]  # two literals of the reader, and a column of the data
    fingerprint = sink_fingerprinted(lines.lazy(), tmp_path / "day.parquet", per_file=per_file, compression="snappy")
    written = pl.read_parquet(tmp_path / "day.parquet")
    assert written.equals(lines) and fingerprint == day_fingerprint(written) == day_fingerprint(lines)
    assert [pq.read_schema(tmp_path / "day.parquet").field(c).type for c in per_file] == [pa.large_string()] * 3
    assert fingerprint.endswith(f"-{lines.height}") and lines.height > 300
    assert [p.name for p in tmp_path.iterdir()] == ["day.parquet"]
