"""CUR 2.0 tag sets hashed from the tags map's dictionary pages instead of its decoded strings.

Oracles: each line's raw map from the delivered file (PyArrow, as Python dicts), hashed with the
definition of a tag set (``tag_set_hash`` over the raw maps with Polars), and the raw rows counted and
summed by hand. The file is cut into many row groups holding the days in interleaved blocks, so a
day's row groups are not consecutive and the ingest skips the others by their statistics.
"""

import datetime as dt
import json
import shutil
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cost_pipeline.lib.billing.fingerprint import tag_set_hash
from cost_pipeline.lib.billing.map_hashes import _line_hashes, hashed_tags
from cost_pipeline.lib.billing.schema import MAP_ENTRIES
from cost_pipeline.lib.billing.sources import source_days
from cost_pipeline.lib.billing.write_day import ingest_days, write_cost_lines_days
from cost_pipeline.lib.storage import Storage
from cost_pipeline_tests.conftest import DAYS, START, cur2_effective, source

PERIOD = "BILLING_PERIOD=2026-09"
# maps a tagging schema meets: none, empty, a null value, the same tags in another order, hostile text
ODD_MAPS = [None, [], [("ml-team", None)], [("user_ml_project", "p"), ("user_ml_team", "t")],
            [("user_ml_team", "t"), ("user_ml_project", "p")], [("ml-team", "é\u202e\x00<script>"), ("", "")]]


@pytest.fixture(scope="module")
def interleaved(tmp_path_factory, sample_dir):
    """The sample's September files as one file of 40-line row groups holding the days in turn."""
    out = tmp_path_factory.mktemp("interleaved") / "billing" / "aws"
    shutil.copytree(sample_dir / "billing" / "aws", out, ignore=shutil.ignore_patterns("*.parquet"))
    files = sorted((sample_dir / "billing" / "aws" / "data" / PERIOD).glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    day = pl.from_arrow(table.column("line_item_usage_start_date")).dt.date()
    blocks = pl.DataFrame({"day": day, "row": range(table.num_rows)}).with_columns(block=pl.int_range(pl.len()).over("day") // 120)
    order = blocks.sort("block", "day", "row")["row"].to_list()  # 120 lines of a day, then of the next day, ...
    table = table.take(order)
    tags = table.column("resource_tags").to_pylist()
    tags = [ODD_MAPS[i % len(ODD_MAPS)] if i % 7 == 0 else t for i, t in enumerate(tags)]
    table = table.set_column(table.schema.get_field_index("resource_tags"), table.schema.field("resource_tags"),
                             pa.array(tags, table.schema.field("resource_tags").type))
    folder = out / "data" / PERIOD
    for old in folder.glob("*.parquet"):
        old.unlink()
    pq.write_table(table, folder / files[0].name, row_group_size=40)
    manifest_path = next((out / "metadata" / PERIOD).glob("*Manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    manifest["dataFiles"] = [f"{manifest['dataFiles'][0].rsplit('/', 1)[0]}/{files[0].name}"]
    manifest_path.write_text(json.dumps(manifest))
    return out, table


def test_interleaved_days_get_the_hashes_and_maps_of_their_own_lines(tmp_path, interleaved):
    uri, table = interleaved
    src = source("aws_cur2", uri, "aws-main")
    raw = pl.from_arrow(table.select(["identity_line_item_id", "line_item_usage_start_date"])).with_columns(
        tags=pl.Series(table.column("resource_tags").to_pylist(), dtype=MAP_ENTRIES).cast(pl.Map(pl.String, pl.String)))
    expected_sets = raw.select("identity_line_item_id", expected=tag_set_hash())
    assert pq.ParquetFile(next(uri.rglob("*.parquet"))).metadata.num_row_groups > 20
    for offset in range(DAYS):
        day = START + dt.timedelta(days=offset)
        maps: list[pl.DataFrame] = []
        plan = source_days(src, [day], Storage(), sums_checked=True, keys_checked=True, maps=maps)
        assert maps and maps[0].height > 10  # the dictionary path, not Polars decoding the maps
        assert hashed_tags(next(uri.rglob("*.parquet")), "resource_tags", "line_item_usage_start_date", [day]).shifts.n_unique() > 1  # groups skipped between
        assert plan.select(pl.col("tags").is_null().all()).collect().item()
        path = tmp_path / f"{day}.parquet"
        sums, tag_sets = ingest_days([src], [day], lambda _: Storage(), {day: path})
        lines = pl.read_parquet(path)
        rows = [r for r in table.to_pylist() if r["line_item_usage_start_date"].date() == day]
        # lines in == lines out, and the day's money by hand from the raw rows
        assert lines.height == len(rows) == int(sums["fp_lines"].sum()) > 100
        assert lines["effective_cost"].sum() == sum((cur2_effective(r) for r in rows), Decimal(0))
        # each line's tag set is the definition's hash of its own delivered map ...
        joined = lines.select("line_item_id", "tag_set").join(expected_sets, left_on="line_item_id", right_on="identity_line_item_id")
        assert joined.height == len(rows) and (joined["tag_set"] == joined["expected"]).all()
        # ... and the day's tag sets give it that map back (hostile, empty, null and reordered ones included)
        by_set = {s: None if t is None else sorted((e["key"], e["value"]) for e in t)
                  for s, t in zip(tag_sets["tag_set"], tag_sets["tags"].cast(MAP_ENTRIES).to_list())}
        assert set(by_set) == set(lines["tag_set"])
        delivered = {r["identity_line_item_id"]: None if r["resource_tags"] is None else sorted(r["resource_tags"]) for r in rows}
        assert all(by_set[s] == delivered[i] for i, s in zip(lines["line_item_id"], lines["tag_set"]))
        assert any(v is None for v in delivered.values()) and any(v == [] for v in delivered.values())


def test_only_maps_of_strings_are_hashed_from_their_dictionaries(tmp_path):
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"line_item_usage_start_date": pa.array([dt.datetime(2026, 9, 1)], pa.timestamp("ms")),
                             "resource_tags": pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int64()))}), path)
    assert hashed_tags(path, "resource_tags", "line_item_usage_start_date", None) is None
    pq.write_table(pa.table({"line_item_usage_start_date": pa.array([dt.datetime(2026, 9, 1)], pa.timestamp("ms")),
                             "resource_tags": pa.array([[("a", "1")]], pa.map_(pa.string(), pa.string()))}), path)
    assert hashed_tags(path, "resource_tags", "line_item_usage_start_date", [START + dt.timedelta(days=1)]).tag_set.is_empty()


def test_lines_hashed_without_their_maps_keep_them_when_two_maps_share_a_hash(tmp_path):
    """A pass whose plan carries the hashes and no maps (as the CUR 2.0 reader gives it): on a day where
    two maps share a hash, the day's lines are written again with their maps, from the plan with maps."""
    first, second = START, START + dt.timedelta(days=1)
    tags = [[{"key": "ml-team", "value": "x"}], [{"key": "ml-team", "value": "y"}], [{"key": "ml-team", "value": "x"}]]
    lines = pl.DataFrame({
        "date": [first, first, second], "source": ["s"] * 3, "currency": ["USD"] * 3, "line_item_id": ["a", "b", "c"],
        "billed_cost": [Decimal("1.10"), Decimal("2.20"), Decimal("3.30")], "effective_cost": [Decimal("1.10"), Decimal("2.20"), Decimal("3.30")],
        "is_final": [True] * 3, "tags": tags,
    }, schema_overrides={"billed_cost": pl.Decimal(38, 12), "effective_cost": pl.Decimal(38, 12), "tags": MAP_ENTRIES})
    lines = lines.with_columns(pl.col("tags").cast(pl.Map(pl.String, pl.String)))
    weak = pl.col("tags").cast(MAP_ENTRIES).list.len().cast(pl.UInt64)  # every one-tag map: one hash
    hashed = lines.with_columns(tag_set=weak, _check=tag_set_hash(seed=2)).with_columns(pl.lit(None, pl.Map(pl.String, pl.String)).alias("tags"))
    maps = [lines.select(weak.alias("tag_set"), tag_set_hash(seed=2).alias("check"), "tags").unique("tag_set", keep="first", maintain_order=True)]
    paths = {day: tmp_path / f"{day}.parquet" for day in (first, second)}
    sums, tag_sets = write_cost_lines_days(hashed.lazy(), paths, maps=maps, with_maps=lines.lazy)
    assert sums.sort("date").select("date", "fp_lines", "effective_cost").rows() == [(first, 2, Decimal("3.30")), (second, 1, Decimal("3.30"))]
    kept = pl.read_parquet(paths[first])  # the colliding day: each line with its own map, from the plan with maps
    assert kept["tags"].to_list() == lines["tags"][:2].to_list() and kept["line_item_id"].to_list() == ["a", "b"]
    # the other day: its one tag set with the map the readers gave
    assert tag_sets["date"].to_list() == [second] and tag_sets["tags"].cast(MAP_ENTRIES).to_list() == [tags[0]]
    assert "tags" not in pl.read_parquet(paths[second]).columns


@pytest.mark.parametrize("by_pairs", [True, False], ids=["pairs", "entries"])
def test_both_ways_of_hashing_entries_give_the_definitions_hashes(by_pairs):
    maps = [[(f"k{i % 3}", f"v{i % 5}"), (f"k{(i + 1) % 3}", None)] for i in range(30)] + [m for m in ODD_MAPS] * 3
    array = pa.array(maps, pa.map_(pa.string(), pa.string()))
    read = pq.read_table(_written(array), read_dictionary=["m.key_value.key", "m.key_value.value"]).column("m").chunks[0]
    sliced = read.slice(5, 40)  # a slice's entries start inside the child arrays
    expected = pl.DataFrame({"tags": pl.Series(maps, dtype=MAP_ENTRIES)}).with_columns(pl.col("tags").cast(pl.Map(pl.String, pl.String)))
    for seed, got in zip((1, 2), _line_hashes(sliced, by_pairs), strict=True):
        assert got.tolist() == expected.select(tag_set_hash(seed=seed)).to_series()[5:45].to_list()


def _written(array: pa.Array) -> pa.BufferReader:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"m": array}), sink)
    return pa.BufferReader(sink.getvalue())


def test_a_line_of_a_row_group_not_hashed_is_an_error_not_another_lines_hash(interleaved):
    uri, _ = interleaved
    path = next(uri.rglob("*.parquet"))
    first_day = hashed_tags(path, "resource_tags", "line_item_usage_start_date", [START])
    # a line of the first day's groups gets its own hash; a line of the next day's groups (never hashed
    # here) fails, whether it lies between the day's groups, before the first or after the last
    lines = pl.scan_parquet(path, row_index_name="_row").select("_row", pl.col("line_item_usage_start_date").dt.date().alias("day"))
    days = lines.collect()
    own = days.filter(pl.col("day") == START).head(50)
    assert own.height == 50
    got = own.lazy().select(first_day.at(pl.col("_row"))[0]).collect().to_series()
    assert got.len() == 50 and got.null_count() == 0
    other = days.filter(pl.col("day") != START)
    for rows in (other.head(1), other.tail(1), other.filter(pl.col("_row") > own["_row"][0]).head(1)):
        with pytest.raises(pl.exceptions.OutOfBoundsError):
            rows.lazy().select(first_day.at(pl.col("_row"))[0]).collect()
    whole = hashed_tags(path, "resource_tags", "line_item_usage_start_date", None)  # every group: one shift
    with pytest.raises(pl.exceptions.OutOfBoundsError):
        pl.LazyFrame({"_row": [days.height]}).select(whole.at(pl.col("_row"))[0]).collect()
