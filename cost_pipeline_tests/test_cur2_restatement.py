"""CUR 2.0 in a local folder: AWS rewrites the whole billing period, only changed days re-run."""

import datetime as dt
import os
import shutil
import time

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cost_pipeline.config import load_settings
from cost_pipeline.definitions import build_defs
from cost_pipeline.defs.resources import PipelineConfig, resources_for
from cost_pipeline_tests.conftest import DAYS, START, write_config

SENSOR = "aws_main_deliveries"


def _tick(defs, instance, cursor, config):
    resources = resources_for(load_settings(config))
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs) as ctx:
        result = defs.resolve_sensor_def(SENSOR).evaluate_tick(ctx)
    return result.run_requests or [], result.cursor, result.skip_message


def test_restated_period_reruns_only_the_day_that_changed(tmp_path, sample_dir):
    billing = tmp_path / "aws"
    shutil.copytree(sample_dir / "billing" / "aws", billing)
    config = write_config(tmp_path, sample_dir, billing_sources=[{"name": "aws-main", "format": "aws_cur2", "uri": str(billing)}])
    defs = build_defs(load_settings(config))
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("daily_costs_job")

    requests, cursor, _ = _tick(defs, instance, None, config)
    assert sorted(r.partition_key for r in requests) == [(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]
    for r in requests:
        job.execute_in_process(instance=instance, partition_key=r.partition_key, resources=resources_for(load_settings(config)))

    # AWS re-delivers every file of the period; only the third day's charges differ
    time.sleep(0.01)
    changed_day = START + dt.timedelta(days=2)
    for path in sorted((billing / "data" / f"BILLING_PERIOD={START:%Y-%m}").glob("*.parquet")):
        table = pq.read_table(path)
        if path.name.endswith(f"{changed_day.day:05d}.snappy.parquet"):
            i = table.schema.get_field_index("line_item_unblended_cost")
            table = table.set_column(i, "line_item_unblended_cost", pc.add(table["line_item_unblended_cost"], 0.01))
        pq.write_table(table, path)
        os.utime(path)
    requests, cursor, _ = _tick(defs, instance, cursor, config)
    assert [r.partition_key for r in requests] == [changed_day.isoformat()]

    # the same delivery seen again (the cursor looks back a little): the same run key, which Dagster dedupes
    again, _, _ = _tick(defs, instance, cursor, config)
    assert [r.run_key for r in again] == [r.run_key for r in requests]


def test_a_failed_run_of_a_delivery_is_requested_again(tmp_path, sample_dir):
    config = write_config(tmp_path, sample_dir)
    defs = build_defs(load_settings(config))
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("daily_costs_job")
    requests, cursor, _ = _tick(defs, instance, None, config)
    first = requests[0]
    broken = tmp_path / "broken.yaml"
    broken.write_text("lake_uri: [not, a, path]\n")  # the run fails, as a transient outage would
    failed = job.execute_in_process(instance=instance, partition_key=first.partition_key, tags=first.tags, raise_on_error=False,
                                    resources={**resources_for(load_settings(config)), "pipeline": PipelineConfig(config_path=str(broken))})
    assert not failed.success
    # the next tick re-lists the files (cursor overlap): the other days keep their keys, the failed day is retried
    again, cursor, _ = _tick(defs, instance, cursor, config)
    keys = {r.partition_key: r.run_key for r in again}
    assert keys == {**{r.partition_key: r.run_key for r in requests}, first.partition_key: first.run_key + ":retry1"}
    retry = next(r for r in again if r.partition_key == first.partition_key)
    ok = job.execute_in_process(instance=instance, partition_key=first.partition_key, tags=retry.tags,
                                resources=resources_for(load_settings(config)))
    assert ok.success
    after, _, _ = _tick(defs, instance, cursor, config)
    assert first.partition_key not in {r.partition_key for r in after}  # materialized: neither requested nor retried
