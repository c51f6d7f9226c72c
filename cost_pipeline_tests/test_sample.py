"""The sample generator: CUR 2.0 layout and types, determinism, and realistic defect rates."""

import datetime as dt
import hashlib

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from cost_pipeline.sample.cur2 import CUR2_SCHEMA
from cost_pipeline.sample.generate import generate
from cost_pipeline_tests.conftest import DAYS, START


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a, b, c = (generate(tmp_path / n, START, 2, 300, seed=s) for n, s in (("a", 5), ("b", 5), ("c", 6)))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_and_schema_follow_cur2(sample_dir):
    files = sorted((sample_dir / "billing" / "aws" / "data").glob("BILLING_PERIOD=*/*.parquet"))
    assert [f.parent.name for f in files] == [f"BILLING_PERIOD={START:%Y-%m}"] * DAYS
    schema = pq.read_schema(files[0])
    assert schema.equals(CUR2_SCHEMA)
    assert pa.types.is_map(schema.field("resource_tags").type)
    usage = sorted(p.name for p in (sample_dir / "usage" / f"date={START}").iterdir())
    assert "k8s_requests.json" in usage and "monitoring_active_series.json" in usage


def test_defect_share_and_anomaly_truth(sample_dir, tmp_path):
    truth = pl.read_csv(sample_dir / "ground_truth" / "untagged_lines.csv", schema_overrides={"line_item_id": pl.String})
    lines = pl.read_parquet(sample_dir / "billing" / "aws" / "data" / "*" / "*.parquet")
    share = truth.filter(~pl.col("defect").str.starts_with("untaggable")).height / lines.height
    assert 0.05 <= share <= 0.15
    assert set(truth["defect"].str.replace(r"\+.*", "")) >= {"drop:team", "unknown_team", "typo_team", "bad_environment", "wrong_case"}
    out = tmp_path / "long"
    generate(out, START, 30, 200, seed=3)
    anomalies = pl.read_csv(out / "ground_truth" / "anomalies.csv")
    assert anomalies.height == 3 and (anomalies["factor"] >= 3).all()
    assert anomalies["date"].str.to_date().min() >= START + dt.timedelta(days=14)
