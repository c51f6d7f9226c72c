"""The tag schema: key folding, value rules, and quarantine against the generator's ground truth."""

import datetime as dt

import polars as pl
import pytest

from cost_pipeline.config import (
    TaggingConfig,
    Team,
    VirtualTagRule,
    bundled_config_path,
    load_settings,
)
from cost_pipeline.lib.pools import classify
from cost_pipeline.lib.tags import apply_tag_schema, fold_key, quarantine
from cost_pipeline.sample import org
from cost_pipeline_tests.conftest import DAYS, START, read_day

REGISTRY = TaggingConfig(teams={t: Team() for t in org.TEAMS})
DEMO_SETTINGS = load_settings(bundled_config_path())
DEMO = DEMO_SETTINGS.tagging
POOLS = DEMO_SETTINGS.allocation.pools


@pytest.mark.parametrize(
    "raw", ["ml-team", "user:ml-team", "user_ml_team", "resourceTags/user:ml-team", "ML_Team", "resource_tags_user_ml_team", " ML-TEAM "]
)
def test_provider_spellings_fold_to_the_schema_key(raw):
    assert fold_key(raw) == "ml-team"


def _lines(tags: list[dict], **columns) -> pl.DataFrame:
    n = len(tags)
    base = {"sub_account_id": ["1"] * n, "service": ["AmazonEC2"] * n, "resource_id": ["i-1"] * n, **columns}
    return pl.DataFrame(
        {"tags": [[{"key": k, "value": v} for k, v in t.items()] for t in tags], "effective_cost": [1.0] * n, **base},
        schema_overrides={"tags": pl.List(pl.Struct({"key": pl.String, "value": pl.String}))},
    ).with_columns(pl.col("tags").cast(pl.Map(pl.String, pl.String)))


GOOD = {"user_ml_team": "fraud-detection", "user_ml_project": "txn-scoring", "user_ml_workload_type": "inference", "user_ml_environment": "prod"}


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        (GOOD, None),
        ({**GOOD, "user_ml_team": "  Fraud-Detection "}, None),
        ({**GOOD, "user_ml_workload_type": "training"}, "missing:ml-experiment-id"),
        ({**GOOD, "user_ml_workload_type": "training", "user_ml_experiment_id": "exp-0042"}, None),
        ({k: v for k, v in GOOD.items() if k != "user_ml_project"}, "missing:ml-project"),
        ({**GOOD, "user_ml_team": "fraud-detecton"}, "unknown_team"),
        ({**GOOD, "user_ml_environment": "production"}, "invalid:ml-environment"),
        ({**GOOD, "user_ml_team": ""}, "missing:ml-team"),
        ({}, "missing:ml-team"),
    ],
)
def test_reason_is_the_first_failure(tags, reason):
    out = apply_tag_schema(_lines([tags]), REGISTRY)
    assert out["tag_reason"][0] == reason


HOSTILE = ["../../etc", "<script>alert(1)</script>", "<!channel>", '=HYPERLINK("http://x","y")', "x" * 10_000, "fraud\x00detection", "fraud‐detection", "frаud-detection"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_team_values_are_quarantined_not_used(value):
    out = apply_tag_schema(_lines([{**GOOD, "user_ml_team": value}]), REGISTRY)
    assert out["tag_reason"][0] == "unknown_team"


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_fail_the_safe_pattern_without_a_registry(value):
    out = apply_tag_schema(_lines([{**GOOD, "user_ml_team": value}]), TaggingConfig())
    assert out["tag_reason"][0] == "invalid:ml-team"


def test_quarantine_matches_ground_truth_line_for_line(sample_dir):
    truth = pl.read_csv(sample_dir / "ground_truth" / "untagged_lines.csv", schema_overrides={"line_item_id": pl.String})
    expected = truth.filter(pl.col("expected_reason").is_not_null()).select("line_item_id", "expected_reason")
    got = []
    for i in range(DAYS):
        lines = read_day("aws_cur2", str(sample_dir / "billing" / "aws"), START + dt.timedelta(days=i), "aws-main")
        got.append(quarantine(classify(lines, DEMO, POOLS)).select("line_item_id", "reason"))
    got = pl.concat(got)
    joined = expected.join(got, on="line_item_id", how="full", coalesce=True)
    assert joined.height == expected.height == got.height > 100
    assert joined.filter(pl.col("reason") != pl.col("expected_reason")).is_empty()
    repaired = truth.filter(pl.col("defect") == "wrong_case")["line_item_id"]
    assert repaired.len() > 0 and not got["line_item_id"].is_in(repaired.implode()).any()


def test_virtual_tags_fill_only_missing_values_and_record_the_rule():
    schema = TaggingConfig(
        teams={t: Team() for t in org.TEAMS},
        virtual_tags=[
            VirtualTagRule(name="platform-account", account_ids=["210000000005"], set={"ml-team": "platform"}),
            VirtualTagRule(
                name="namespace-owner",
                set_from_tag={"ml-team": "kubernetes-namespace"},
                value_map={"fraud-training": "fraud-detection"},
            ),
        ],
    )
    no_team = {k: v for k, v in GOOD.items() if k != "user_ml_team"}
    lines = _lines(
        [no_team, GOOD, {**no_team, "user_kubernetes_namespace": "fraud-training"}, {**no_team, "user_kubernetes_namespace": "other"}],
        sub_account_id=["210000000005", "210000000005", "1", "1"],
    )
    out = apply_tag_schema(lines, schema)
    assert out["team"].to_list() == ["platform", "fraud-detection", "fraud-detection", None]
    assert out["tag_source"].to_list() == ["ml-team=platform-account", "tag", "ml-team=namespace-owner", "tag"]
    assert out["tag_reason"].to_list() == [None, None, None, "missing:ml-team"]


def test_virtual_tag_values_are_validated_like_tags():
    schema = TaggingConfig(
        teams={"platform": Team()},
        virtual_tags=[VirtualTagRule(name="bad", services=["AmazonEC2"], set={"ml-team": "marketing"})],
    )
    out = apply_tag_schema(_lines([{k: v for k, v in GOOD.items() if k != "user_ml_team"}]), schema)
    assert out["tag_reason"][0] == "unknown_team" and out["tag_source"][0] == "ml-team=bad"


def test_configured_aliases_are_matched():
    schema = TaggingConfig(aliases={"ml-team": ["owner-team"]})
    lines = _lines([{**{k: v for k, v in GOOD.items() if k != "user_ml_team"}, "Owner_Team": "search-ranking"}])
    assert apply_tag_schema(lines, schema)["team"][0] == "search-ranking"


def test_virtual_tags_and_pools_in_the_sample_repair_what_the_truth_says(sample_dir):
    truth = pl.read_csv(sample_dir / "ground_truth" / "untagged_lines.csv", schema_overrides={"line_item_id": pl.String})
    tagged = pl.concat(
        classify(read_day("aws_cur2", str(sample_dir / "billing" / "aws"), START + dt.timedelta(days=i), "aws-main"), DEMO, POOLS)
        for i in range(DAYS)
    )
    virtual = truth.filter(pl.col("defect").str.ends_with("+virtual_tag"))["line_item_id"]
    rows = tagged.filter(pl.col("line_item_id").is_in(virtual.implode()))
    assert rows.height == virtual.len() > 0
    assert rows["tag_reason"].is_null().all() and rows["tag_source"].str.starts_with("ml-team=account-").all()
    pooled = truth.filter(pl.col("defect").str.ends_with("+pool"))["line_item_id"]
    rows = tagged.filter(pl.col("line_item_id").is_in(pooled.implode()))
    assert rows.height == pooled.len() > 0
    assert rows["tag_reason"].is_null().all() and rows["pool"].is_not_null().all()


def test_tag_keys_from_the_parquet_key_column_equal_a_full_pass(tmp_path):
    from cost_pipeline.lib.tags import parquet_tag_keys, raw_tag_keys

    entries = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))
    tags = [[{"key": "user_ml_team", "value": "a"}], [], None, [{"key": "ML-Team ", "value": "b"}, {"key": "\u202eevil", "value": ""}],
            [{"key": "user_ml_team", "value": None}]] * 40_000
    frame = pl.DataFrame({"n": range(len(tags)), "tags": pl.Series(tags, dtype=entries).cast(pl.Map(pl.String, pl.String))})
    path = tmp_path / "day.parquet"
    frame.write_parquet(path, row_group_size=30_000)  # several row groups
    assert parquet_tag_keys(path) == raw_tag_keys(pl.scan_parquet(path)) == sorted(["user_ml_team", "ML-Team ", "\u202eevil"])
    pl.DataFrame({"n": [1]}).write_parquet(tmp_path / "no_tags.parquet")
    assert parquet_tag_keys(tmp_path / "no_tags.parquet") is None
