"""The cost lake on S3 (moto's server on loopback): same tables, same totals, readable by Polars."""

import os
import subprocess
import sys

import dagster as dg
import polars as pl

from cost_pipeline.config import load_settings
from cost_pipeline.lib.lake import Lake
from cost_pipeline_tests.conftest import DAYS, START, write_config
from cost_pipeline_tests.test_assets import LAST, _run


def test_pipeline_writes_and_reconciles_on_an_s3_lake(tmp_path, sample_dir, s3):
    url, client = s3
    client.create_bucket(Bucket="lake")
    for path in (sample_dir / "usage").rglob("*.json"):  # usage extracts on S3 too
        client.put_object(Bucket="lake", Key=f"usage/{path.relative_to(sample_dir / 'usage').as_posix()}", Body=path.read_bytes())
    usage = {"extracts_uri": "s3://lake/usage", "endpoint_url": url}
    config = write_config(tmp_path, sample_dir, lake_uri="s3://lake/cost", lake_endpoint_url=url, usage=usage)
    result = _run(config, dg.DagsterInstance.ephemeral())
    assert result.success
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="lake", Prefix="cost/")["Contents"]}
    for table in ["cost_lines", "untagged_spend", "tag_compliance", "usage", "allocated_costs", "team_daily_costs"]:
        assert {f"cost/{table}/date={START}/part-0.parquet", f"cost/{table}/date={LAST}/part-0.parquet"} <= keys
    assert not [k for k in keys if ".tmp" in k]

    settings = load_settings(config)
    lake = Lake.from_uri(settings.lake_uri, settings.lake_endpoint_url)
    allocated = lake.scan("allocated_costs").collect()
    lines = lake.scan("cost_lines").collect()
    assert allocated["date"].n_unique() == DAYS
    assert allocated.filter(pl.col("allocation") == "shared").height > 0  # pools split by the S3 extracts
    assert allocated.filter(pl.col("reason").str.starts_with("no_usage")).is_empty()
    assert allocated["amount"].sum() == lines["effective_cost"].sum()
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["allocation_conserves_cost_lines"] is True

    # the lake is plain hive-partitioned Parquet: a reader that knows nothing of this project (PyArrow's
    # datasets on S3, as Athena or Spark read it) finds every day and the same totals, per day
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from pyarrow.fs import S3FileSystem

    fs = S3FileSystem(endpoint_override=url, scheme="http", access_key="test", secret_key="test", region="us-east-1")
    hive = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")  # as the files' own date column (README)

    def per_day(table: str, column: str) -> dict:
        data = ds.dataset(f"lake/cost/{table}", filesystem=fs, format="parquet", partitioning=hive).to_table(columns=["date", column])
        summed = data.group_by("date").aggregate([(column, "sum")])
        return {str(d): v for d, v in zip(pc.cast(summed["date"], "string").to_pylist(), summed[f"{column}_sum"].to_pylist())}

    by_hand = {str(d): v for d, v in lines.group_by("date").agg(pl.col("effective_cost").sum()).iter_rows()}
    assert len(by_hand) == DAYS and per_day("cost_lines", "effective_cost") == by_hand == per_day("allocated_costs", "amount")

    from cost_pipeline.definitions import defs as load_defs
    from cost_pipeline.defs.resources import resources_for

    reports = load_defs().resolve_job_def("reports_job").execute_in_process(resources=resources_for(load_settings(config)))
    assert reports.success
    summary = client.get_object(Bucket="lake", Key="cost/reports/summary.md")["Body"].read().decode()
    assert "Untagged (quarantined) share" in summary
    assert client.get_object(Bucket="lake", Key="cost/reports/teams/fraud-detection.csv")["Body"].read().startswith(b"date,team")

    proc = subprocess.run(
        [sys.executable, "-m", "cost_pipeline.cli", "summary", "--config", str(config)],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "s3://lake/cost" in proc.stdout


def test_raw_files_go_to_and_from_the_lake_as_files(tmp_path, s3):
    """Archived Prometheus answers are copied file to file (a 282 MB body is never held in memory)."""
    url, client = s3
    client.create_bucket(Bucket="lake")
    body = tmp_path / "body.json"
    body.write_bytes(b'{"status":"success","data":{"resultType":"matrix","result":[]}}' + b" " * 3_000_000)
    for i, lake in enumerate((Lake.from_uri("s3://lake/cost", url), Lake.from_uri(str(tmp_path / "local")))):
        back = tmp_path / f"back-{i}.json"
        assert not lake.fetch_file("usage_raw", START, "q.json", back) and not back.exists()
        lake.write_file("usage_raw", START, "q.json", body)
        assert lake.fetch_file("usage_raw", START, "q.json", back) and back.read_bytes() == body.read_bytes()
        assert lake.read_file("usage_raw", START, "q.json") == body.read_bytes()


def test_a_ranged_run_lists_the_billing_source_once_and_reads_every_line(tmp_path, sample_dir, s3, monkeypatch):
    """A backfill lists each billing source once and each batch of days reads the files so listed: every
    batch listed the whole source again (a year of daily files: the bucket listed 365 times, each time
    all of it). Requests counted by moto's recorder; lines and billed cost by hand from the raw files."""
    import datetime as dt
    import json
    from decimal import ROUND_HALF_EVEN, Decimal

    import pyarrow.parquet as pq
    import requests
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from cost_pipeline.definitions import build_defs

    url, client = s3
    billing = sample_dir / "billing" / "aws"
    for path in sorted(billing.rglob("*")):
        if path.is_file():
            client.put_object(Bucket="billing", Key=f"cur2/{path.relative_to(billing).as_posix()}", Body=path.read_bytes())
    source = {"name": "aws-main", "format": "aws_cur2", "uri": "s3://billing/cur2", "endpoint_url": url}
    config = write_config(tmp_path, sample_dir, billing_sources=[source])
    monkeypatch.chdir(tmp_path)  # moto's recording is written to the working directory
    requests.post(f"{url}/moto-api/recorder/start-recording", timeout=10)
    tags = {ASSET_PARTITION_RANGE_START_TAG: START.isoformat(), ASSET_PARTITION_RANGE_END_TAG: LAST.isoformat()}
    result = build_defs(load_settings(config)).resolve_job_def("daily_costs_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=tags, asset_selection=[dg.AssetKey("cost_lines")])
    requests.post(f"{url}/moto-api/recorder/stop-recording", timeout=10)
    assert result.success
    recorded = [json.loads(line) for line in requests.get(f"{url}/moto-api/recorder/download-recording", timeout=10).text.splitlines()]
    listings = [r["url"] for r in recorded if r["method"] == "GET" and "list-type=2" in r["url"] and "/billing?" in r["url"]]
    assert len(listings) == 1, listings

    days = [START + dt.timedelta(days=i) for i in range(DAYS)]
    raw = pl.concat([pl.from_arrow(pq.read_table(p, columns=["line_item_usage_start_date", "line_item_unblended_cost"]))
                     for p in sorted(billing.rglob("*.parquet"))])
    lines = pl.read_parquet(tmp_path / "lake" / "cost_lines" / "*" / "*.parquet")
    for day in days:
        mine = raw.filter(pl.col("line_item_usage_start_date").dt.date() == day)
        billed = sum(Decimal(repr(v)).quantize(Decimal("1e-12"), ROUND_HALF_EVEN) for v in mine["line_item_unblended_cost"].to_list())
        written = lines.filter(pl.col("date") == day)
        assert mine.height > 300 and (written.height, written["billed_cost"].sum()) == (mine.height, billed)
