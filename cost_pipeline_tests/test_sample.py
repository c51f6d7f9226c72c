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


def test_exact_lines_counts_every_line_of_the_day(tmp_path):
    """The benchmark's "1 M lines a day" is the day's CUR lines, negations and fees included; the
    default counts usage lines only (the day then holds ~31 % more)."""
    def per_day(root):
        lines = pl.read_parquet(root / "billing" / "aws" / "data" / "*" / "*.parquet")
        usage = lines.filter(pl.col("line_item_line_item_type").is_in(["Usage", "SavingsPlanCoveredUsage"]))
        day = pl.col("line_item_usage_start_date").dt.date()
        return (lines.group_by(day).len().sort("line_item_usage_start_date")["len"].to_list(),
                usage.group_by(day).len().sort("line_item_usage_start_date")["len"].to_list())
    for n in (1000, 4321):
        generate(tmp_path / f"exact{n}", START, 2, n, seed=4, exact_lines=True)
        every, _ = per_day(tmp_path / f"exact{n}")
        assert all(n <= count <= n + 1 for count in every), every
    generate(tmp_path / "usage", START, 2, 1000, seed=4)
    every, usage = per_day(tmp_path / "usage")
    assert usage == [1000, 1000] and all(count > 1200 for count in every)
