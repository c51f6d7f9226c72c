"""Legacy CUR on S3 (moto's server on loopback, real boto3 HTTP): a re-delivery re-runs only changed days."""

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal

import dagster as dg
import polars as pl
import pyarrow as pa

from cost_pipeline.config import load_settings
from cost_pipeline.definitions import build_defs
from cost_pipeline.defs.resources import resources_for
from cost_pipeline.sample.cur_legacy import deliver
from cost_pipeline_tests.conftest import START, write_config
from cost_pipeline_tests.test_cur_legacy import _day_table

DAYS = [START + dt.timedelta(days=i) for i in range(3)]


def _upload(client, files):
    for key, data in files.items():
        client.put_object(Bucket="billing", Key=key, Body=data)


def _tick(defs, instance, cursor, config):
    sensor = defs.resolve_sensor_def("aws_legacy_deliveries")
    resources = resources_for(load_settings(config))
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs) as ctx:
        result = sensor.evaluate_tick(ctx)
    return result.run_requests or [], result.cursor


def _execute(defs, instance, config, requests):
    job = defs.resolve_job_def("daily_costs_job")
    for request in requests:
        result = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags,
            resources=resources_for(load_settings(config)),
        )
        assert result.success


def _expected_billed(table: pa.Table, day: dt.date) -> Decimal:
    q = Decimal("1e-12")
    return sum(
        Decimal(repr(v)).quantize(q, ROUND_HALF_EVEN)
        for v, t in zip(table["line_item_unblended_cost"].to_pylist(), table["line_item_usage_start_date"].to_pylist())
        if t.date() == day
    )


def test_redelivery_reruns_exactly_the_changed_day(tmp_path, sample_dir, s3):
    url, client = s3
    source = {"name": "aws-legacy", "format": "aws_cur_legacy", "uri": "s3://billing/cur/acme", "endpoint_url": url}
    config = write_config(tmp_path, sample_dir, billing_sources=[source])
    defs = build_defs(load_settings(config))
    instance = dg.DagsterInstance.ephemeral()

    first = pa.concat_tables([_day_table(sample_dir, d) for d in DAYS])
    _upload(client, deliver({}, "acme", START.replace(day=1), "asm-1", first))
    requests, cursor = _tick(defs, instance, None, config)
    assert sorted(r.partition_key for r in requests) == [d.isoformat() for d in DAYS]
    _execute(defs, instance, config, requests)
    lake = tmp_path / "lake" / "cost_lines"
    before = {d: (lake / f"date={d}" / "part-0.parquet").stat().st_mtime_ns for d in DAYS}

    assert _tick(defs, instance, cursor, config)[0] == []  # nothing new: no runs

    restated = pa.concat_tables([_day_table(sample_dir, DAYS[0]), _day_table(sample_dir, DAYS[1], factor=1.1), _day_table(sample_dir, DAYS[2])])
    _upload(client, deliver({}, "acme", START.replace(day=1), "asm-2", restated))
    requests, cursor = _tick(defs, instance, cursor, config)
    assert [r.partition_key for r in requests] == [DAYS[1].isoformat()]
    assert requests[0].run_key.startswith(f"aws-legacy:{DAYS[1]}:")
    _execute(defs, instance, config, requests)

    after = {d: (lake / f"date={d}" / "part-0.parquet").stat().st_mtime_ns for d in DAYS}
    assert after[DAYS[0]] == before[DAYS[0]] and after[DAYS[2]] == before[DAYS[2]] and after[DAYS[1]] != before[DAYS[1]]
    day2 = pl.read_parquet(lake / f"date={DAYS[1]}" / "part-0.parquet")
    assert day2["billed_cost"].sum() == _expected_billed(restated, DAYS[1])
    assert day2.height == _day_table(sample_dir, DAYS[1]).num_rows  # one assembly, no duplicated lines
    assert set(day2["source_file"].str.extract(r"/(asm-\d)/")) == {"asm-2"}
    allocated = pl.read_parquet(tmp_path / "lake" / "allocated_costs" / f"date={DAYS[1]}" / "part-0.parquet")
    assert allocated["amount"].sum() == day2["effective_cost"].sum()
