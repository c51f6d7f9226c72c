"""Shared fixtures: a small generated organisation and configs pointing at temporary lakes."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import boto3
import polars as pl
import pytest
import yaml
from moto.server import ThreadedMotoServer

from cost_pipeline.config import BillingSource, bundled_config_path
from cost_pipeline.lib.billing.schema import MAP_ENTRIES
from cost_pipeline.lib.billing.sources import read_source_day
from cost_pipeline.lib.billing.write_day import ingest_days
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.storage import Storage
from cost_pipeline.sample.generate import generate

# The public billing samples: ../shared/data beside the checkout (as for developers and CI), or
# wherever COST_PIPELINE_SHARED_DATA points. Under CI their absence is an error, not a skip.
SHARED_DATA = Path(os.environ.get("COST_PIPELINE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def needs_shared_data(path: Path):
    return pytest.mark.skipif(
        not path.exists() and not os.environ.get("CI"), reason=f"{path} is not beside this checkout"
    )
START = dt.date(2026, 9, 1)
DAYS = 4
LINES = 1500


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate(out, START, DAYS, LINES, seed=11)
    return out


def cur2_effective(row: dict) -> Decimal:
    """Independent oracle for one raw CUR 2.0 row: its effective cost by the contract's rules, by hand."""
    kind = row["line_item_line_item_type"]
    if kind == "SavingsPlanCoveredUsage":
        return Decimal(repr(row["savings_plan_savings_plan_effective_cost"]))
    if kind == "SavingsPlanRecurringFee":
        return Decimal(repr(row["savings_plan_total_commitment_to_date"])) - Decimal(repr(row["savings_plan_used_commitment"]))
    return Decimal(0) if kind == "SavingsPlanNegation" else Decimal(repr(row["line_item_unblended_cost"]))


def write_config(tmp_path: Path, sample: Path, **overrides) -> Path:
    """The demo config, re-pointed at a temporary lake and the given sample data."""
    raw = yaml.safe_load(bundled_config_path().read_text())
    raw["lake_uri"] = str(tmp_path / "lake")
    raw["billing_sources"] = [{"name": "aws-main", "format": "aws_cur2", "uri": str(sample / "billing" / "aws")}]
    raw["usage"] = {"extracts_uri": str(sample / "usage"), "prometheus_url": None}
    raw["slack"] = {"outbox_uri": str(tmp_path / "lake" / "_outbox")}
    raw.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


OCTOBER_FIRST, OCTOBER_LAST = dt.date(2026, 9, 1), dt.date(2026, 11, 1)  # September as baseline, October whole


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cost_pipeline.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def october(tmp_path_factory) -> Path:
    """A lake with 2026-09-01 .. 2026-11-01 materialized through the CLI (once per session: ~40 s), with the
    generator's injected anomalies (spikes, a level shift, new spend) and 1,500 lines a day."""
    root = tmp_path_factory.mktemp("october")
    generate(root / "data", OCTOBER_FIRST, (OCTOBER_LAST - OCTOBER_FIRST).days + 1, 1500, seed=5)
    config = write_config(root, root / "data", partitions_start_date=OCTOBER_FIRST.isoformat())
    done = cli("run", "--config", str(config), "--start", OCTOBER_FIRST.isoformat(), "--end", OCTOBER_LAST.isoformat())
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "run-output.txt").write_text(done.stdout)
    return root


@pytest.fixture
def config_path(tmp_path, sample_dir) -> Path:
    return write_config(tmp_path, sample_dir)


@pytest.fixture
def s3(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="billing")
    yield url, client
    server.stop()




def source(fmt: str, uri: object = "unused", name: str = "src", **options) -> BillingSource:
    return BillingSource(name=name, format=fmt, uri=str(uri), **options)


def read_day(fmt: str, uri: object, day: dt.date, name: str = "src", storage=None, **options):
    """One day of one billing source through the shared reader flow (validated file by file), and
    through the asset's ingest (checked in and after its write pass): both must give the same lines,
    or refuse the input with the same error."""
    src = source(fmt, uri, name, **options)
    try:
        lines = read_source_day(src, day, storage)
    except InputError as refused:
        with pytest.raises(InputError) as in_pass:
            _ingested_day(src, day, storage)
        assert str(in_pass.value) == str(refused)
        raise
    written, sums, tag_sets = _ingested_day(src, day, storage)
    assert int(sums["fp_lines"].sum()) == written.height == lines.height  # lines in == lines out
    assert written.drop("tag_set").equals(lines.drop("tags"))
    # the day's tag sets give every written line the map the reader read for it
    by_set = dict(zip(tag_sets["tag_set"], (None if t is None else sorted((e["key"], e["value"]) for e in t) for t in tag_sets["tags"].cast(MAP_ENTRIES).to_list())))
    read = [None if t is None else sorted((e["key"], e["value"]) for e in t) for t in lines["tags"].cast(MAP_ENTRIES).to_list()]
    assert [by_set[s] for s in written["tag_set"]] == read
    return lines


def _ingested_day(src: BillingSource, day: dt.date, storage) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.parquet"
        sums, tag_sets = ingest_days([src], [day], lambda _: storage or Storage(), {day: path})
        return pl.read_parquet(path), sums, tag_sets
