"""The cost lake on GCS (the gcp-storage-emulator on loopback, reached by google-cloud-storage through
``STORAGE_EMULATOR_HOST``, as GKE deployments reach GCS): same tables, same totals, reports."""

import os
import socket
import subprocess
import sys

import dagster as dg
import polars as pl
import pytest

from cost_pipeline.config import load_settings
from cost_pipeline.lib.lake import Lake
from cost_pipeline_tests.conftest import DAYS, START, cur2_effective, write_config
from cost_pipeline_tests.test_assets import LAST, _run


@pytest.fixture
def gcs(monkeypatch):
    from gcp_storage_emulator.server import create_server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="lake-bucket")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    from google.cloud import storage

    yield storage.Client(project="test")
    server.stop()


def test_pipeline_writes_and_reconciles_on_a_gcs_lake(tmp_path, sample_dir, gcs):
    config = write_config(tmp_path, sample_dir, lake_uri="gs://lake-bucket/cost", lake_gcp_project="test")
    result = _run(config, dg.DagsterInstance.ephemeral())
    assert result.success
    names = {b.name for b in gcs.list_blobs("lake-bucket", prefix="cost/")}
    for table in ["cost_lines", "untagged_spend", "tag_compliance", "usage", "allocated_costs", "team_daily_costs"]:
        assert {f"cost/{table}/date={START}/part-0.parquet", f"cost/{table}/date={LAST}/part-0.parquet"} <= names

    # totals against the raw CUR files, read by plain Polars
    raw = pl.read_parquet(sample_dir / "billing" / "aws" / "data" / "*" / "*.parquet")
    lake = Lake.from_settings(load_settings(config))
    allocated = lake.scan("allocated_costs").collect()
    assert allocated["date"].n_unique() == DAYS
    assert allocated.height and allocated.filter(pl.col("allocation") == "shared").height > 0
    lines = lake.scan("cost_lines").collect()
    assert lines.height == raw.height
    assert allocated["amount"].sum() == lines["effective_cost"].sum() == sum(cur2_effective(r) for r in raw.iter_rows(named=True))

    from cost_pipeline.definitions import defs as load_defs
    from cost_pipeline.defs.resources import resources_for

    reports = load_defs().resolve_job_def("reports_job").execute_in_process(resources=resources_for(load_settings(config)))
    assert reports.success
    bucket = gcs.bucket("lake-bucket")
    assert "Untagged (quarantined) share" in bucket.blob("cost/reports/summary.md").download_as_text()
    assert bucket.blob("cost/reports/teams/fraud-detection.csv").download_as_bytes().startswith(b"date,team")

    proc = subprocess.run([sys.executable, "-m", "cost_pipeline.cli", "summary", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert "gs://lake-bucket/cost" in proc.stdout


def test_a_changed_gcs_object_is_fetched_again(tmp_path, gcs):
    """The local cache is keyed by the object's generation: a replaced day is never read stale."""
    lake = Lake.from_uri("gs://lake-bucket/t", gcp_project="test")
    lake.write_day("x", START, pl.DataFrame({"date": [START], "v": [1]}))
    assert lake.scan_days("x", [START]).collect()["v"].to_list() == [1]
    lake.write_day("x", START, pl.DataFrame({"date": [START, START], "v": [2, 3]}))
    assert lake.scan_days("x", [START]).collect()["v"].to_list() == [2, 3]
    assert lake.days("x") == {START}
    with pytest.raises(FileNotFoundError, match="lacks days"):
        lake.scan_days("x", [LAST])


def test_raw_files_go_to_and_from_a_gcs_lake_as_files(tmp_path, gcs):
    lake = Lake.from_uri("gs://lake-bucket/cost", gcp_project="test")
    body, back = tmp_path / "body.json", tmp_path / "back.json"
    body.write_bytes(b'{"status":"success"}' + b" " * 3_000_000)
    assert not lake.fetch_file("usage_raw", START, "q.json", back) and not back.exists()
    lake.write_file("usage_raw", START, "q.json", body)
    assert lake.fetch_file("usage_raw", START, "q.json", back) and back.read_bytes() == body.read_bytes()
