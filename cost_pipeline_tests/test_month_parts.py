"""Billing files that hold many days (an export's month parts, rows in no day order): a ranged run
writes several days in one pass over the files, and every day comes out as a run of that day alone
writes it. Oracles: the raw CUR rows counted and summed by hand per day, and single-day runs."""

import datetime as dt
import json
import re
import shutil
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cost_pipeline.config import load_settings
from cost_pipeline.defs.billing.assets import cost_lines
from cost_pipeline.defs.resources import resources_for
from cost_pipeline.lib.billing.schema import MAP_ENTRIES
from cost_pipeline.lib.billing.sources import day_batches, source_day
from cost_pipeline.lib.billing.write_day import write_cost_lines_days
from cost_pipeline.lib.storage import Storage
from cost_pipeline_tests.conftest import DAYS, START, cur2_effective, write_config

LAST = START + dt.timedelta(days=DAYS - 1)
PERIOD = "BILLING_PERIOD=2026-09"


@pytest.fixture(scope="module")
def month_parts(tmp_path_factory, sample_dir) -> Path:
    """The sample's September CUR 2.0 files rewritten as two parts, each holding lines of every day,
    shuffled, the manifest listing them (as AWS Data Exports deliver a month)."""
    out = tmp_path_factory.mktemp("parts") / "billing" / "aws"
    source = sample_dir / "billing" / "aws"
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("*.parquet"))
    rows = pl.read_parquet(source / "data" / PERIOD / "*.parquet").sample(fraction=1.0, shuffle=True, seed=3)
    manifest_path = next((out / "metadata" / PERIOD).glob("*Manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    prefix = manifest["dataFiles"][0].rsplit("/", 1)[0]
    half = rows.height // 2
    names = ["acme-ml-cur2-00001.snappy.parquet", "acme-ml-cur2-00002.snappy.parquet"]
    for name, part in zip(names, (rows.slice(0, half), rows.slice(half)), strict=True):
        part.write_parquet(out / "data" / PERIOD / name)
    manifest["dataFiles"] = [f"{prefix}/{name}" for name in names]
    manifest_path.write_text(json.dumps(manifest))
    return out.parent.parent


def _materialize(root: Path, data: Path, first: dt.date, last: dt.date) -> dg.ExecuteInProcessResult:
    root.mkdir()
    config = write_config(root, data)
    return dg.materialize([cost_lines], resources=resources_for(load_settings(config)), instance=dg.DagsterInstance.ephemeral(),
                          tags={ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()})


def test_month_parts_are_read_once_for_several_days_and_each_day_is_exact(tmp_path, month_parts):
    sources = load_settings(write_config(tmp_path, month_parts)).billing_sources
    days = [START + dt.timedelta(days=i) for i in range(DAYS)]
    assert day_batches(sources, days, lambda _: Storage(), max_days=8) == [days]  # both parts hold every day: one pass
    assert day_batches(sources, days, lambda _: Storage(), max_days=3) == [days[:3], days[3:]]

    ranged = _materialize(tmp_path / "ranged", month_parts, START, LAST)
    raw = pl.read_parquet(month_parts / "billing" / "aws" / "data" / PERIOD / "*.parquet")
    for day in days:
        # lines in == lines out, and the money to the last of 12 decimal places, against the raw rows by hand
        rows = raw.filter(pl.col("line_item_usage_start_date").dt.date() == day)
        lines = pl.read_parquet(tmp_path / "ranged" / "lake" / "cost_lines" / f"date={day}" / "part-0.parquet")
        assert lines.height == rows.height > 0
        assert lines["effective_cost"].sum() == sum((cur2_effective(r) for r in rows.iter_rows(named=True)), Decimal(0))
        assert set(lines["date"].unique()) == {day}
        tag_sets = pl.read_parquet(tmp_path / "ranged" / "lake" / "tag_sets" / f"date={day}" / "part-0.parquet")
        assert set(tag_sets["tag_set"]) == set(lines["tag_set"])  # every line's map, and only the day's
        # the same day written by a run of that day alone: same lines, same tag sets, same fingerprint
        alone = _materialize(tmp_path / f"alone-{day}", month_parts, day, day)
        lake = tmp_path / f"alone-{day}" / "lake"
        key = ["line_item_id", "charge_period_start"]
        assert pl.read_parquet(lake / "cost_lines" / f"date={day}" / "part-0.parquet").sort(key).equals(lines.sort(key))
        assert pl.read_parquet(lake / "tag_sets" / f"date={day}" / "part-0.parquet").equals(tag_sets)
        fingerprint = [m.metadata["fingerprint/aws-main"] for m in ranged.asset_materializations_for_node("cost_lines") if m.partition == day.isoformat()]
        assert fingerprint == [m.metadata["fingerprint/aws-main"] for m in alone.asset_materializations_for_node("cost_lines")]


def test_a_pass_over_days_splits_tag_set_collisions_and_empty_days_per_day(tmp_path):
    """One day of the pass has two maps sharing a hash (forced by a weak hash): that day keeps its lines'
    maps and has no tag sets; the other day is written normally; a day without lines gets an empty file."""
    first, second, empty = START, START + dt.timedelta(days=1), START + dt.timedelta(days=2)
    lines = pl.DataFrame({
        "date": [first, first, second, second],
        "source": ["s"] * 4, "currency": ["USD"] * 4, "line_item_id": ["a", "b", "c", "d"],
        "billed_cost": [Decimal("1.10"), Decimal("2.20"), Decimal("3.30"), Decimal("4.40")],
        "effective_cost": [Decimal("1.10"), Decimal("2.20"), Decimal("3.30"), Decimal("4.40")],
        "is_final": [True] * 4,
        "tags": [[{"key": "ml-team", "value": "x"}], [{"key": "ml-team", "value": "y"}],
                 [{"key": "ml-team", "value": "x"}], [{"key": "ml-team", "value": "x"}, {"key": "ml-project", "value": "p"}]],
    }, schema_overrides={"billed_cost": pl.Decimal(38, 12), "effective_cost": pl.Decimal(38, 12), "tags": MAP_ENTRIES})
    lines = lines.with_columns(pl.col("tags").cast(pl.Map(pl.String, pl.String)))
    weak = pl.col("tags").cast(MAP_ENTRIES).list.len().cast(pl.UInt64)  # first's two maps collide, second's do not
    paths = {day: tmp_path / f"{day}.parquet" for day in (first, second, empty)}
    sums, tag_sets = write_cost_lines_days(lines.lazy(), paths, tag_set=weak)
    assert sums.sort("date").select("date", "fp_lines", "effective_cost").rows() == [(first, 2, Decimal("3.30")), (second, 2, Decimal("7.70"))]
    assert tag_sets["date"].to_list() == [second, second]
    kept = pl.read_parquet(paths[first])
    assert kept["tags"].to_list() == lines["tags"][:2].to_list() and kept["line_item_id"].to_list() == ["a", "b"]
    written = pl.read_parquet(paths[second])
    assert "tags" not in written.columns and written["line_item_id"].to_list() == ["c", "d"]
    assert pl.read_parquet(paths[empty]).height == 0 and "tags" not in pl.read_parquet(paths[empty]).columns


def _unknown_currency(parts: Path) -> str:
    path = parts / "acme-ml-cur2-00002.snappy.parquet"
    frame = pl.read_parquet(path)
    row = frame["line_item_line_item_type"].to_list().index("Usage")
    frame.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit("US$")).otherwise(pl.col("line_item_currency_code"))
                       .alias("line_item_currency_code")).write_parquet(path)
    return re.escape(f"{path}: unknown currency 'US$' on 1 line(s)")


def _line_in_both_parts(parts: Path) -> str:
    first, second = parts / "acme-ml-cur2-00001.snappy.parquet", parts / "acme-ml-cur2-00002.snappy.parquet"
    pl.concat([pl.read_parquet(second), pl.read_parquet(first).head(1)]).write_parquet(second)
    return r"1 line\(s\) delivered more than once, e\.g\. line \S+ in \S+acme-ml-cur2-00001\S+ and \S+acme-ml-cur2-00002"


@pytest.mark.parametrize("corrupt", [_unknown_currency, _line_in_both_parts], ids=["currency", "duplicate"])
def test_a_bad_part_fails_the_whole_pass_naming_the_file_and_keeps_every_day(tmp_path, month_parts, corrupt):
    data = tmp_path / "data"
    shutil.copytree(month_parts, data)
    assert _materialize(tmp_path / "run", data, START, LAST).success
    lake = tmp_path / "run" / "lake"
    before = {p: p.read_bytes() for p in sorted((lake / "cost_lines").rglob("*.parquet"))}
    assert len(before) == DAYS
    problem = corrupt(data / "billing" / "aws" / "data" / PERIOD)
    config = write_config(tmp_path / "run", data)
    result = dg.materialize([cost_lines], resources=resources_for(load_settings(config)), instance=dg.DagsterInstance.ephemeral(),
                            tags={ASSET_PARTITION_RANGE_START_TAG: START.isoformat(), ASSET_PARTITION_RANGE_END_TAG: LAST.isoformat()},
                            raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert re.search(problem, message), message
    assert {p: p.read_bytes() for p in sorted((lake / "cost_lines").rglob("*.parquet"))} == before  # no day replaced


@pytest.mark.parametrize("retype", [
    pl.col("^line_item_usage_(start|end)_date$").dt.replace_time_zone(None),
    pl.col("^line_item_usage_(start|end)_date$").dt.to_string("%Y-%m-%dT%H:%M:%SZ"),
], ids=["naive-timestamps", "text-timestamps"])
def test_a_day_read_from_parts_keeps_every_line_whatever_the_timestamp_type(tmp_path, month_parts, retype):
    """The parts are scanned with a range on the raw usage start (so Polars can skip other days' row groups):
    exports whose timestamps are naive or text still give the day exactly."""
    data = tmp_path / "data"
    shutil.copytree(month_parts, data)
    for part in (data / "billing" / "aws" / "data" / PERIOD).glob("*.parquet"):
        pl.read_parquet(part).with_columns(retype).write_parquet(part)
    raw = pl.read_parquet(month_parts / "billing" / "aws" / "data" / PERIOD / "*.parquet")
    source = load_settings(write_config(tmp_path, data)).billing_sources[0]
    for day in (START, LAST):
        rows = raw.filter(pl.col("line_item_usage_start_date").dt.date() == day)
        lines = source_day(source, day, Storage()).collect()
        assert lines.height == rows.height > 0 and set(lines["date"]) == {day}
        assert lines["effective_cost"].sum() == sum((cur2_effective(r) for r in rows.iter_rows(named=True)), Decimal(0))
