"""Attribution by tag set: each distinct tags map of a day classified once, exactly as line by line.

The oracle is independent of the code under test: the generator's ground truth of which line is
quarantined and why, the raw CUR rows summed by hand (``cur2_effective``), and for the hard cases
(conflicting spellings, virtual-tag rules on resource prefixes and other tags, a pool selecting a
provider tag, lines without tags, hostile values) the line-by-line classifier these sums replace.
"""

import datetime as dt
from decimal import Decimal

import polars as pl
import pyarrow.parquet as pq
import pytest

from cost_pipeline.config import Pool, PoolSelect, TaggingConfig, Team, VirtualTagRule, bundled_config_path, load_settings
from cost_pipeline.config.allocation import EvenDriver
from cost_pipeline.lib.allocate import SUM_KEYS, attribution_sums
from cost_pipeline.lib.attribution import attribute_day, lake_day, lines_with_tags
from cost_pipeline.lib.billing.fingerprint import day_fingerprint
from cost_pipeline.lib.billing.schema import COST_LINES_SCHEMA, MAP_ENTRIES
from cost_pipeline.lib.billing.sources import source_day
from cost_pipeline.lib.billing.write_day import write_cost_lines_day
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.pools import classify
from cost_pipeline.lib.tags import quarantine
from cost_pipeline.sample import org
from cost_pipeline_tests.conftest import DAYS, START, cur2_effective, source

SETTINGS = load_settings(bundled_config_path())
KEYS = [*SUM_KEYS, "sub_account_id"]


def _write_day(lake: Lake, plan: pl.LazyFrame, day: dt.date) -> pl.DataFrame:
    """As the ``cost_lines`` asset writes a day: the lines, then their tag sets."""
    with lake.staging("cost_lines") as lines_stage, lake.staging("tag_sets") as tag_set_stage:
        path, _ = lines_stage.reserve(day)
        _, tag_sets = write_cost_lines_day(plan, path)
        tag_set_stage.write_day(day, tag_sets)
    return tag_sets


def test_sample_days_by_tag_set_match_the_ground_truth_and_the_bill(tmp_path, sample_dir):
    lake = Lake.from_uri(str(tmp_path / "lake"))
    src = source("aws_cur2", str(sample_dir / "billing" / "aws"), "aws-main")
    truth = pl.read_csv(sample_dir / "ground_truth" / "untagged_lines.csv", schema_overrides={"line_item_id": pl.String})
    raw = pl.concat([pl.read_parquet(p) for p in sorted((sample_dir / "billing" / "aws" / "data").rglob("*.parquet"))])
    for i in range(DAYS):
        day = START + dt.timedelta(days=i)
        tag_sets = _write_day(lake, source_day(src, day), day)
        lines, known = lake_day(lake, day)
        assert known is not None and 0 < known.height == tag_sets.height
        attributed = attribute_day(lines, None, SETTINGS.tagging, SETTINGS.allocation.pools, known)
        assert attributed.combination.tag_sets is not None  # the tag-set path, not the fallback
        rows = raw.filter(pl.col("line_item_usage_start_date").dt.date() == day).to_dicts()
        # lines in = lines out, and every cent of the bill, summed by hand from the raw rows
        assert attributed.sums["lines"].sum() == len(rows) > 300
        assert attributed.sums["effective_cost"].sum() == sum((cur2_effective(r) for r in rows), Decimal(0))
        got = attributed.quarantine().collect()
        expected = truth.filter(pl.col("expected_reason").is_not_null() & pl.col("line_item_id").is_in(pl.Series([r["identity_line_item_id"] for r in rows]).implode()))
        joined = expected.join(got.select("line_item_id", "reason", "tags"), on="line_item_id", how="full", coalesce=True)
        assert joined.height == expected.height == got.height > 10
        assert joined.filter(pl.col("reason") != pl.col("expected_reason")).is_empty()
        # each quarantined line carries its own delivered tags, from the tag sets
        delivered = {r["identity_line_item_id"]: sorted((r["resource_tags"] or {}).items()) for r in rows}
        assert all(sorted(dict(t or []).items()) == delivered[i] for i, t in zip(got["line_item_id"], got["tags"]))


def _cost_lines(rows: list[dict]) -> pl.DataFrame:
    """Cost lines with every contract column (tags as given, a map or None)."""
    n = len(rows)
    base = {name: [None] * n for name in COST_LINES_SCHEMA}
    base.update(date=[START] * n, provider=["aws"] * n, source=["aws-main"] * n, currency=["USD"] * n, is_final=[False] * n,
                line_item_id=[str(i) for i in range(n)], service=["AmazonEC2"] * n, sub_account_id=["1"] * n, resource_id=["i-1"] * n)
    for i, row in enumerate(rows):
        for key, value in row.items():
            base[key][i] = value
    base["tags"] = [None if t is None else [{"key": k, "value": v} for k, v in t.items()] for t in base["tags"]]
    base["effective_cost"] = base["billed_cost"] = [Decimal(c) for c in base["effective_cost"]]
    frame = pl.DataFrame(base, schema_overrides={**COST_LINES_SCHEMA, "tags": pl.List(pl.Struct({"key": pl.String, "value": pl.String}))})
    return frame.with_columns(pl.col("tags").cast(COST_LINES_SCHEMA["tags"])).select(list(COST_LINES_SCHEMA))


GOOD = {"user_ml_team": "fraud-detection", "user_ml_project": "txn-scoring", "user_ml_workload_type": "inference", "user_ml_environment": "prod"}
HARD = [
    {"tags": GOOD, "effective_cost": "1.01"},
    {"tags": {**GOOD, "user_ml_team": " Fraud-Detection "}, "effective_cost": "2.02"},
    {"tags": {**GOOD, "user:ml-team": "search-ranking"}, "effective_cost": "3.03"},  # two spellings disagree
    {"tags": {**GOOD, "user:ml-team": "fraud-detection"}, "effective_cost": "4.04"},  # two spellings agree
    {"tags": None, "effective_cost": "5.05"},
    {"tags": {}, "effective_cost": "6.06", "sub_account_id": "210000000005"},  # virtual tag by account
    {"tags": {k: v for k, v in GOOD.items() if k != "user_ml_team"}, "effective_cost": "7.07", "resource_id": "i-0abc-fraud"},
    {"tags": {k: v for k, v in GOOD.items() if k != "user_ml_team"}, "effective_cost": "7.50", "resource_id": "i-0abd-other"},
    {"tags": {**GOOD, "user_ml_team": "", "user_owner": "forecasting"}, "effective_cost": "8.08"},  # set_from_tag
    {"tags": {**GOOD, "user_ml_team": "<script>alert(1)</script>"}, "effective_cost": "9.09"},
    {"tags": {"aws_eks_cluster_name": "ml-shared", "user_Name": "node-1"}, "effective_cost": "10.10"},  # pool by provider tag
    {"tags": {"aws_eks_cluster_name": "ml-shared", "user_Name": "node-2"}, "effective_cost": "11.11", "service": "AmazonEKS"},
    {"tags": {**GOOD, "user_ml_workload_type": "training"}, "effective_cost": "12.12", "currency": "EUR"},
    {"tags": {"user_ml_team": "nobody"}, "effective_cost": "13.13", "service": None, "sub_account_id": None},  # null keys join too
]
SCHEMA = TaggingConfig(
    teams={t: Team() for t in org.TEAMS},
    virtual_tags=[
        VirtualTagRule(name="platform-account", account_ids=["210000000005"], set={"ml-team": "platform", "ml-project": "shared",
                                                                                   "ml-workload-type": "inference", "ml-environment": "prod"}),
        VirtualTagRule(name="fraud-prefix", resource_prefixes=["i-0abc"], set={"ml-team": "fraud-detection"}),
        VirtualTagRule(name="owner", set_from_tag={"ml-team": "owner"}, value_map={"forecasting": "forecasting"}, tag_equals={"ml-project": "txn-scoring"}),
    ],
)
POOLS = [Pool(name="eks", select=PoolSelect(tags={"aws:eks:cluster-name": "ml-shared"}), driver=EvenDriver(kind="even"))]


@pytest.mark.parametrize("by_tag_set", [True, False])
def test_hard_cases_classify_alike_by_combination_and_line_by_line(tmp_path, by_tag_set):
    lines = _cost_lines(HARD)
    lake = Lake.from_uri(str(tmp_path / "lake"))
    _write_day(lake, lines.lazy(), START)
    day_lines, tag_sets = lake_day(lake, START)
    assert tag_sets is not None and tag_sets.height == len({str(r["tags"]) for r in HARD})
    assert "tags" not in day_lines.collect_schema().names()  # the maps are stored once, in tag_sets
    if by_tag_set:
        attributed = attribute_day(day_lines, None, SCHEMA, POOLS, tag_sets)
    else:  # the maps joined back onto the lines, classified from the maps
        keys = sorted({k for r in HARD for k in (r["tags"] or {})})
        attributed = attribute_day(lines_with_tags(lake, [START]), keys, SCHEMA, POOLS)
    one_by_one = classify(lines, SCHEMA, POOLS)
    assert attributed.sums.sort(KEYS, nulls_last=True).equals(attribution_sums(one_by_one).collect().sort(KEYS, nulls_last=True))
    got = attributed.quarantine().collect().sort("line_item_id")
    assert got.equals(quarantine(one_by_one).sort("line_item_id"))
    # the cases meant: a conflict and a hostile value quarantined, a pool by provider tag, rules applied
    reasons = dict(zip(got["line_item_id"], got["reason"]))
    assert reasons["2"] == "conflict:ml-team" and reasons["9"] == "unknown_team" and "3" not in reasons and "5" not in reasons
    by_team = attributed.sums.group_by("team", "pool").agg(pl.col("effective_cost").sum())
    assert by_team.filter(pl.col("pool") == "eks")["effective_cost"].sum() == Decimal("21.21")
    assert by_team.filter(pl.col("team") == "platform")["effective_cost"].sum() == Decimal("6.06")


def test_overlapping_resource_prefixes_classify_alike_by_combination_and_line_by_line(tmp_path):
    """A combination is classified by a stand-in resource id built from the prefixes its lines' ids
    start with: with prefixes that start one another (a rule's ``i-0abc``, pools' ``i-0abc-pool`` and
    ``i-0a``), ids equal to a prefix, missing ids and more prefixes than one mask holds (64), every
    line lands where it would one by one."""
    untagged = {k: v for k, v in GOOD.items() if k != "user_ml_team"}
    ids = ["i-0abc-pool-1", "i-0abc-pool", "i-0abc-x", "i-0abc", "i-0ab", "i-0", None, "i-0abc-pool-2", "x-69-1"]
    rows = [{"tags": untagged, "effective_cost": f"{i + 1}.0{i + 1}", "resource_id": r} for i, r in enumerate(ids)]
    lines = _cost_lines(rows)
    pools = [Pool(name="pooled", select=PoolSelect(resource_prefixes=["i-0abc-pool"]), driver=EvenDriver(kind="even")),
             Pool(name="wide", select=PoolSelect(resource_prefixes=["i-0a"]), driver=EvenDriver(kind="even")),
             Pool(name="many", select=PoolSelect(resource_prefixes=[f"x-{i:02d}-" for i in range(70)]), driver=EvenDriver(kind="even"))]
    lake = Lake.from_uri(str(tmp_path / "lake"))
    _write_day(lake, lines.lazy(), START)
    day_lines, tag_sets = lake_day(lake, START)
    attributed = attribute_day(day_lines, None, SCHEMA, pools, tag_sets)
    one_by_one = classify(lines, SCHEMA, pools)
    assert attributed.sums.sort(KEYS, nulls_last=True).equals(attribution_sums(one_by_one).collect().sort(KEYS, nulls_last=True))
    assert attributed.quarantine().collect().sort("line_item_id").equals(quarantine(one_by_one).sort("line_item_id"))
    by_pool = dict(attributed.sums.group_by("pool").agg(pl.col("effective_cost").sum()).iter_rows())
    # by hand: ids starting i-0abc-pool (1.01 + 2.02 + 8.08), then the other ids starting i-0a (3.03 + 4.04 + 5.05)
    assert by_pool["pooled"] == Decimal("11.11") and by_pool["wide"] == Decimal("12.12") and by_pool["many"] == Decimal("9.09")
    assert attributed.sums["lines"].sum() == len(rows)


def test_the_lake_gives_each_line_its_delivered_map_back(tmp_path):
    lines = _cost_lines(HARD)
    lake = Lake.from_uri(str(tmp_path / "lake"))
    _write_day(lake, lines.lazy(), START)
    assert "tags" not in pq.read_schema(lake.day_path("cost_lines", START)).names
    assert lines_with_tags(lake, [START]).collect().equals(lines)
    # readers get each column's null count; no min/max, which cannot skip row groups of lines in delivery order
    group = pq.ParquetFile(lake.day_path("cost_lines", START)).metadata.row_group(0)
    stats = {group.column(i).path_in_schema: group.column(i).statistics for i in range(group.num_columns)}
    assert stats["resource_id"].null_count == 0 and stats["invoice_id"].null_count == len(HARD)
    assert not any(s.has_min_max for s in stats.values())


def test_a_tag_set_is_the_tags_whatever_their_order(tmp_path):
    rows = [
        {"tags": {"a": "x", "b": "y"}, "effective_cost": "1.00"},
        {"tags": {"b": "y", "a": "x"}, "effective_cost": "2.00"},  # the same tags in another order
        {"tags": {"a": "y", "b": "x"}, "effective_cost": "4.00"},  # the two values traded
        {"tags": {"b": "x", "a": "y"}, "effective_cost": "8.00"},
        {"tags": {"a": "x"}, "effective_cost": "16.00"},
        {"tags": {"a": "x", "b": "y", "c": ""}, "effective_cost": "32.00"},
        {"tags": {"a": "x", "b": None}, "effective_cost": "64.00"},
        {"tags": {}, "effective_cost": "128.00"},
        {"tags": None, "effective_cost": "256.00"},
    ]
    lines = _cost_lines(rows)
    lake = Lake.from_uri(str(tmp_path / "lake"))
    tag_sets = _write_day(lake, lines.lazy(), START)
    as_set = lambda tags: None if tags is None else frozenset(tags.items())  # noqa: E731
    expected: dict = {}
    for r in rows:
        expected[as_set(r["tags"])] = expected.get(as_set(r["tags"]), Decimal(0)) + Decimal(r["effective_cost"])
    assert tag_sets.height == len(expected) == 7  # an empty map and no map are two tag sets
    stored = pl.read_parquet(lake.day_path("cost_lines", START))
    assert stored["tag_set"].null_count() == 0 and stored.height == len(rows)
    by_set = stored.group_by("tag_set").agg(pl.col("effective_cost").sum()).join(tag_sets, on="tag_set")
    assert {as_set(t): c for t, c in zip(by_set["tags"].to_list(), by_set["effective_cost"], strict=True)} == expected
    # each line gets its tags back (the entries in the order of the day's first line with those tags)
    back = lines_with_tags(lake, [START]).collect()
    assert [as_set(t) for t in back["tags"].to_list()] == [as_set(r["tags"]) for r in rows]
    assert back.drop("tags").equals(lines.drop("tags"))
    # a re-delivery with the tags in another order is the same day; trading two values is not
    reordered = _cost_lines([{**r, "tags": None if r["tags"] is None else dict(reversed(r["tags"].items()))} for r in rows])
    traded = _cost_lines([{**r, "tags": {"a": "y", "b": "x"}} if r["tags"] == {"a": "x", "b": "y"} else r for r in rows])
    assert day_fingerprint(reordered) == day_fingerprint(lines) != day_fingerprint(traded)


def test_stale_or_missing_tag_sets_are_a_clear_error(tmp_path):
    lines = _cost_lines(HARD)
    lake = Lake.from_uri(str(tmp_path / "lake"))
    _write_day(lake, lines.lazy(), START)
    day_lines, tag_sets = lake_day(lake, START)
    # a tag sets table older than the lines (one set missing): the lines hold no maps to fall back to
    with pytest.raises(InputError, match="2026-09-01: 1 line.* tag_set that the day's tag_sets table does not hold.*cost_lines"):
        attribute_day(day_lines, None, SCHEMA, POOLS, tag_sets.filter(pl.col("tag_set") != tag_sets["tag_set"][0]))
    lake.day_path("tag_sets", START).unlink()
    with pytest.raises(InputError, match=r"tag_sets/date=2026-09-01: missing.*materialize cost_lines"):
        lake_day(lake, START)


def test_days_whose_lines_carry_their_maps_are_read_by_the_maps(tmp_path):
    lines = _cost_lines(HARD)
    lake = Lake.from_uri(str(tmp_path / "lake"))
    expected = attribution_sums(classify(lines, SCHEMA, POOLS)).collect().sort(KEYS, nulls_last=True)
    # two different maps with one hash (forced by a weak hash): the day keeps each line's map, no tag sets
    weak = pl.col("tags").cast(MAP_ENTRIES).list.len().cast(pl.UInt64)
    with lake.staging("cost_lines") as lines_stage, lake.staging("tag_sets") as tag_set_stage:
        path, _ = lines_stage.reserve(START)
        _, tag_sets = write_cost_lines_day(lines.lazy(), path, tag_set=weak)
        tag_set_stage.write_day(START, tag_sets)
    assert tag_sets.is_empty()
    day_lines, none = lake_day(lake, START)
    assert none is None and day_lines.collect()["tags"].equals(lines["tags"])
    shared = attribute_day(day_lines, None, SCHEMA, POOLS)
    assert shared.sums.sort(KEYS, nulls_last=True).equals(expected)
    assert shared.quarantine().collect().sort("line_item_id").equals(quarantine(classify(lines, SCHEMA, POOLS)).sort("line_item_id"))
    # a day written by an earlier version (maps on the lines, no tag_set column, no tag sets): same
    pq.write_table(pq.read_table(path := lake.day_path("cost_lines", START)).drop(["tag_set"]), path)
    lake.day_path("tag_sets", START).unlink()
    old_lines, none = lake_day(lake, START)
    assert none is None and "tag_set" not in old_lines.collect_schema().names()
    assert attribute_day(old_lines, None, SCHEMA, POOLS).sums.sort(KEYS, nulls_last=True).equals(expected)
    # ... and a lake holding such a day next to a new one still reads as one table
    _write_day(lake, lines.with_columns(date=pl.lit(START + dt.timedelta(days=1))).lazy(), START + dt.timedelta(days=1))
    both = lake.scan("cost_lines").select("date", "effective_cost").collect()
    assert both.height == 2 * len(HARD) and both["effective_cost"].sum() == 2 * sum(Decimal(r["effective_cost"]) for r in HARD)
