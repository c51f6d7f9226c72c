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
