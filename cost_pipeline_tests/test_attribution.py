"""Who pays, exactly: namespace attributes from any extract, tag-key precedence, and scenario oracles.

Every expected amount below is worked out by hand in the comment above it (or, for the label
scenarios, is the hand-computed max/owner case of ``test_allocation.py``: 48.85 / 9.33 / 41.82).
"""

import datetime as dt
import json
from decimal import Decimal as D

import polars as pl
import pytest

from cost_pipeline.config import EvenDriver, KubernetesDriver, Pool, PoolSelect, TaggingConfig, Team
from cost_pipeline.lib.allocate import allocate
from cost_pipeline.lib.billing.gcp import read_gcp_file
from cost_pipeline.lib.extracts import parse_query_range
from cost_pipeline.lib.pools import classify
from cost_pipeline.lib.tags import apply_tag_schema
from cost_pipeline.sample.gcp import gcp_rows, write_jsonl
from cost_pipeline_tests.conftest import read_day, source
from cost_pipeline_tests.test_allocation import DAY, GIB, _body, _lines

REGISTRY = TaggingConfig(teams={t: Team() for t in ["fraud-detection", "search-ranking", "forecasting", "platform"]})
A = {"namespace": "a", "label_ml_team": "fraud-detection", "label_ml_project": "txn-scoring"}
B = {"namespace": "b", "label_ml_team": "search-ranking"}
LABELLED = {("fraud-detection", "txn-scoring", None): D("48.85"), ("search-ranking", None, None): D("9.33"), ("platform", "__idle__", None): D("41.82")}


def _requests(a: dict, b: dict) -> dict:
    return _body([
        ({**a, "resource": "cpu"}, 4), ({**a, "resource": "memory"}, 8 * GIB), ({**a, "resource": "nvidia_com_gpu"}, 1),
        ({**b, "resource": "cpu"}, 2), ({**b, "resource": "memory"}, 8 * GIB), ({**b, "resource": "nvidia_com_mig_1g_10gb"}, 1),
    ])


def _scenario(bodies: dict) -> pl.DataFrame:
    """Extracts in the order given (the bug: attributes depended on which extract came first)."""
    capacity = _body([({"resource": "cpu"}, 10), ({"resource": "memory"}, 40 * GIB), ({"resource": "nvidia_com_gpu"}, 2)])
    return pl.concat([parse_query_range(b, q, DAY, q) for q, b in {**bodies, "k8s_node_capacity": capacity}.items()])


def _allocate(samples: pl.DataFrame, driver: KubernetesDriver | None = None, cost: str = "100", lines: pl.DataFrame | None = None):
    driver = driver or KubernetesDriver(kind="kubernetes", idle="owner")
    pool = Pool(name="eks", owner_team="platform", select=PoolSelect(resource_prefixes=["i-0eks"]), driver=driver)
    lines = _lines(cost) if lines is None else lines
    out = allocate(classify(lines, REGISTRY, [pool]), "v", [pool], samples, REGISTRY)
    assert out["amount"].sum() == lines["effective_cost"].sum()
    return {(r["team"], r["project"], r["reason"]): round(r["amount"], 2) for r in out.filter(pl.col("pool") == "eks").iter_rows(named=True)}


def test_labels_only_on_the_requests_extract_reach_every_namespace():
    """cAdvisor usage summed ``by (namespace)`` carries no labels, and its extract names sort first."""
    samples = _scenario({
        "k8s_cpu_usage": _body([({"namespace": "a"}, 2), ({"namespace": "b"}, 3)]),
        "k8s_memory_usage": _body([({"namespace": "a"}, 10 * GIB), ({"namespace": "b"}, 4 * GIB)]),
        "k8s_requests": _requests(A, B),
    })
    assert _allocate(samples) == LABELLED


def test_kube_namespace_labels_is_the_documented_source():
    bare_a, bare_b = {"namespace": "a"}, {"namespace": "b"}
    samples = _scenario({
        "k8s_cpu_usage": _body([(bare_a, 2), (bare_b, 3)]),
        "k8s_memory_usage": _body([(bare_a, 10 * GIB), (bare_b, 4 * GIB)]),
        "k8s_requests": _requests(bare_a, bare_b),
        "kube_namespace_labels": _body([(A, 1), (B, 1)]),
    })
    assert _allocate(samples) == LABELLED


def test_conflicting_team_labels_go_to_unknown_with_a_reason():
    """Namespace a says fraud-detection on its requests and forecasting in kube_namespace_labels."""
    samples = _scenario({
        "k8s_cpu_usage": _body([({"namespace": "a"}, 2), ({"namespace": "b"}, 3)]),
        "k8s_memory_usage": _body([({"namespace": "a"}, 10 * GIB), ({"namespace": "b"}, 4 * GIB)]),
        "k8s_requests": _requests(A, B),
        "kube_namespace_labels": _body([({**A, "label_ml_team": "forecasting"}, 1), (B, 1)]),
    })
    assert _allocate(samples) == {
        ("unknown", None, "conflicting_namespace_labels"): D("48.85"), ("search-ranking", None, None): D("9.33"),
        ("platform", "__idle__", None): D("41.82"),
    }


def test_namespaces_config_wins_and_an_unlabelled_namespace_is_unknown():
    samples = _scenario({
        "k8s_cpu_usage": _body([({"namespace": "a"}, 2), ({"namespace": "b"}, 3)]),
        "k8s_memory_usage": _body([({"namespace": "a"}, 10 * GIB), ({"namespace": "b"}, 4 * GIB)]),
        "k8s_requests": _requests({"namespace": "a"}, {"namespace": "b"}),
    })
    driver = KubernetesDriver(kind="kubernetes", idle="owner", namespaces={"a": {"team": "forecasting", "project": "demand-forecast"}})
    assert _allocate(samples, driver) == {
        ("forecasting", "demand-forecast", None): D("48.85"), ("unknown", None, "missing_team_label"): D("9.33"),
        ("platform", "__idle__", None): D("41.82"),
    }


def _two_step(series: list[tuple[dict, float, float]]) -> dict:
    t0 = dt.datetime(2026, 9, 2, tzinfo=dt.UTC).timestamp()
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": m, "values": [[t0, str(v0)], [t0 + 3600, str(v1)]]} for m, v0, v1 in series]}}


X = {"namespace": "x", "label_ml_team": "fraud-detection"}
Y = {"namespace": "y", "label_ml_team": "search-ranking"}


def _bursting() -> pl.DataFrame:
    """x: cpu request 2, usage 1 then 4 (above its request in the second hour); memory 1 GiB requested,
    0.5 used. y: cpu request 3, usage 1; memory 3 GiB requested, 0.5 then 4 GiB used."""
    bodies = {
        "k8s_requests": _two_step([({**X, "resource": "cpu"}, 2, 2), ({**X, "resource": "memory"}, GIB, GIB),
                                   ({**Y, "resource": "cpu"}, 3, 3), ({**Y, "resource": "memory"}, 3 * GIB, 3 * GIB)]),
        "k8s_cpu_usage": _two_step([({"namespace": "x"}, 1, 4), ({"namespace": "y"}, 1, 1)]),
        "k8s_memory_usage": _two_step([({"namespace": "x"}, GIB / 2, GIB / 2), ({"namespace": "y"}, GIB / 2, 4 * GIB)]),
    }
    return pl.concat([parse_query_range(b, q, DAY, q) for q, b in bodies.items()])


@pytest.mark.parametrize("basis, expected", [
    # max(request, usage): cpu x 2+4=6, y 3+3=6; memory x 1+1=2, y 3+4=7 (GiB-hours); no GPU: cpu:memory .9:.1
    # x = .9*6/12 + .1*2/9 = .4722..., y = .9*6/12 + .1*7/9 = .5277...; of $120: 56.67 / 63.33
    ("max_request_usage", {("fraud-detection", None, None): D("56.67"), ("search-ranking", None, None): D("63.33")}),
    # requests: cpu x 4, y 6; memory x 2, y 6: x = .9*.4 + .1*.25 = .385, y = .615; of $120: 46.20 / 73.80
    ("requests", {("fraud-detection", None, None): D("46.20"), ("search-ranking", None, None): D("73.80")}),
])
def test_usage_above_request_for_part_of_a_day(basis, expected):
    assert _allocate(_bursting(), KubernetesDriver(kind="kubernetes", basis=basis, idle="share"), cost="120") == expected


def _gpu_pool_nobody_used() -> pl.DataFrame:
    """A cluster with 4 GPUs that nobody requested; x and y each request 2 cpu and 4 GiB."""
    bodies = {
        "k8s_requests": _two_step([({**X, "resource": "cpu"}, 2, 2), ({**X, "resource": "memory"}, 4 * GIB, 4 * GIB),
                                   ({**Y, "resource": "cpu"}, 2, 2), ({**Y, "resource": "memory"}, 4 * GIB, 4 * GIB)]),
        "k8s_node_capacity": _two_step([({"resource": "cpu"}, 10, 10), ({"resource": "memory"}, 20 * GIB, 20 * GIB),
                                        ({"resource": "nvidia_com_gpu"}, 4, 4)]),
    }
    return pl.concat([parse_query_range(b, q, DAY, q) for q, b in bodies.items()])


@pytest.mark.parametrize("idle, expected", [
    # GPUs exist, so gpu:cpu:memory = .9:.09:.01; nobody used the GPUs: their .9 is the owner's idle.
    # share: cpu and memory split evenly: x = y = .045 + .005 = .05 -> 5.00 each, idle 90.00
    ("share", {("fraud-detection", None, None): D("5.00"), ("search-ranking", None, None): D("5.00"), ("platform", "__idle__", None): D("90.00")}),
    # owner: cpu capacity 20 cpu-hours, x uses 4: .09*4/20 = .018; memory 40 GiB-hours, x 8: .01*8/40 = .002
    # x = y = .02 -> 2.00 each; idle = 1 - .04 -> 96.00
    ("owner", {("fraud-detection", None, None): D("2.00"), ("search-ranking", None, None): D("2.00"), ("platform", "__idle__", None): D("96.00")}),
])
def test_a_resource_nobody_used_is_the_owners_idle(idle, expected):
    driver = KubernetesDriver(kind="kubernetes", basis="requests", idle=idle)
    assert _allocate(_gpu_pool_nobody_used(), driver) == expected


def test_even_pool_over_the_teams_with_direct_spend_that_day():
    """Three teams with direct spend; the $100 pool splits in thirds, exact to 10^-12, adding up to 100."""
    direct = pl.DataFrame({
        "date": [DAY] * 3, "currency": ["USD"] * 3, "sub_account_id": ["9"] * 3, "service": ["AmazonS3"] * 3,
        "resource_id": ["bucket-a", "bucket-b", "bucket-c"], "effective_cost": [D("1"), D("2"), D("3")],
        "tags": [[{"key": "ml-team", "value": t}, {"key": "ml-project", "value": "p"}, {"key": "ml-workload-type", "value": "inference"},
                  {"key": "ml-environment", "value": "prod"}] for t in ["fraud-detection", "search-ranking", "forecasting"]],
    }, schema_overrides={"effective_cost": pl.Decimal(38, 12), "tags": pl.List(pl.Struct({"key": pl.String, "value": pl.String}))})
    lines = pl.concat([direct.with_columns(pl.col("tags").cast(pl.Map(pl.String, pl.String))), _lines("100")])
    pool = Pool(name="eks", select=PoolSelect(resource_prefixes=["i-0eks"]), driver=EvenDriver(kind="even"))
    out = allocate(classify(lines, REGISTRY, [pool]), "v", [pool], None, REGISTRY).filter(pl.col("pool") == "eks")
    assert sorted(out["team"]) == ["forecasting", "fraud-detection", "search-ranking"]
    assert sorted(out["amount"]) == [D("33.333333333333"), D("33.333333333333"), D("33.333333333334")]


def _aws_line(tags: dict) -> pl.DataFrame:
    return pl.DataFrame({
        "date": [DAY], "currency": ["USD"], "sub_account_id": ["1"], "service": ["AmazonEC2"], "resource_id": ["i-1"],
        "effective_cost": [D("5")], "tags": [[{"key": k, "value": v} for k, v in tags.items()]],
    }, schema_overrides={"effective_cost": pl.Decimal(38, 12), "tags": pl.List(pl.Struct({"key": pl.String, "value": pl.String}))}
    ).with_columns(pl.col("tags").cast(pl.Map(pl.String, pl.String)))


BASE = {"user_ml_project": "p", "user_ml_workload_type": "inference", "user_ml_environment": "prod"}


@pytest.mark.parametrize("tags, team, reason", [
    ({"user_ml_team": "fraud-detection", "user_ml-team": "Fraud-Detection "}, "fraud-detection", None),  # same value, two spellings
    ({"user_ml_team": "fraud-detection", "user:ml-team": "search-ranking"}, None, "conflict:ml-team"),
    ({"user:ml-team": "fraud-detection", "user:ML-Team": "forecasting"}, None, "conflict:ml-team"),  # legacy CUR casing
])
def test_two_spellings_of_one_key_agree_or_the_line_is_quarantined(tags, team, reason):
    tagged = apply_tag_schema(_aws_line({**BASE, **tags}), REGISTRY)
    assert tagged["tag_reason"].to_list() == [reason]
    if team:
        assert tagged["team"].to_list() == [team]


def test_legacy_cur_columns_that_fold_together_conflict(tmp_path):
    path = tmp_path / "cur" / "cur.csv"
    path.parent.mkdir()
    header = ("identity/LineItemId,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/UsageEndDate,lineItem/ProductCode,"
              "lineItem/CurrencyCode,lineItem/UnblendedCost,lineItem/UsageAccountId,resourceTags/user:ml-team,resourceTags/user:ML-Team")
    path.write_text(header + "\nx1,Usage,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,AmazonEC2,USD,1.25,111,fraud-detection,search-ranking\n")
    lines = read_day("aws_cur_legacy", path.parent, dt.date(2026, 9, 1))
    assert apply_tag_schema(lines, REGISTRY)["tag_reason"].to_list() == ["conflict:ml-team"]


def test_gcp_resource_labels_win_over_project_labels_spelled_differently(tmp_path):
    """Resource label ``ml_team=fraud-detection`` in a project labelled ``ml-team=search-ranking``."""
    row = gcp_rows(DAY, 1, seed=1)[0]
    row["labels"] = [{"key": "ml_team", "value": "fraud-detection"}]
    row["project"]["labels"] = [{"key": "ml-team", "value": "search-ranking"}, {"key": "ml-project", "value": "txn-scoring"}]
    path = write_jsonl(tmp_path / "gcp.jsonl", [row])
    lines = read_gcp_file(path, str(path), path.name, source("gcp_billing_export"))
    tagged = apply_tag_schema(lines, REGISTRY)
    assert tagged["team"].to_list() == ["fraud-detection"] and tagged["project"].to_list() == ["txn-scoring"]
    assert json.dumps(sorted(lines["tags"].map.keys().to_list()[0])) == json.dumps(["ml-project", "ml_team"])
