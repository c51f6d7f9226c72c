"""Shared-pool allocation against numbers worked out by hand.

Scenario (one day, two hourly samples, every value constant):
  capacity: 10 cpu, 40 GiB memory, 2 GPUs (one whole, one partitioned into MIG slices)
  ns a (fraud-detection): cpu request 4 / usage 2; memory request 8 GiB / usage 10 GiB
                          (above its request); one whole GPU
  ns b (search-ranking):  cpu request 2 / usage 3 (above its request); memory 8 GiB / usage 4 GiB;
                          one MIG slice nvidia.com/mig-1g.10gb = 1/7 GPU
  pool cost $100; GPUs present, so weights gpu:cpu:memory = 9:0.9:0.1 -> 0.9, 0.09, 0.01
"""

import datetime as dt
from decimal import Decimal as D

import polars as pl
import pytest

from cost_pipeline.config import (
    EvenDriver,
    FixedDriver,
    KubernetesDriver,
    MetricDriver,
    Pool,
    PoolSelect,
    TaggingConfig,
    Team,
)
from cost_pipeline.lib.allocate import allocate
from cost_pipeline.lib.extracts import parse_query_range
from cost_pipeline.lib.money import split_exact
from cost_pipeline.lib.pools import classify, driver_shares

DAY = dt.date(2026, 9, 2)
T0 = dt.datetime(2026, 9, 2, tzinfo=dt.UTC).timestamp()
GIB = 2**30


def _body(series: list[tuple[dict, float]]) -> dict:
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": m, "values": [[T0, str(v)], [T0 + 3600, str(v)]]} for m, v in series
    ]}}


def _samples() -> pl.DataFrame:
    a = {"namespace": "a", "label_ml_team": "fraud-detection", "label_ml_project": "txn-scoring"}
    b = {"namespace": "b", "label_ml_team": "search-ranking"}
    bodies = {
        "k8s_requests": _body([
            ({**a, "resource": "cpu"}, 4), ({**a, "resource": "memory"}, 8 * GIB), ({**a, "resource": "nvidia_com_gpu"}, 1),
            ({**b, "resource": "cpu"}, 2), ({**b, "resource": "memory"}, 8 * GIB), ({**b, "resource": "nvidia_com_mig_1g_10gb"}, 1),
        ]),
        "k8s_cpu_usage": _body([(a, 2), (b, 3)]),
        "k8s_memory_usage": _body([(a, 10 * GIB), (b, 4 * GIB)]),
        "k8s_node_capacity": _body([({"resource": "cpu"}, 10), ({"resource": "memory"}, 40 * GIB), ({"resource": "nvidia_com_gpu"}, 2)]),
    }
    return pl.concat([parse_query_range(b, q, DAY, q) for q, b in bodies.items()])


def _lines(cost: str) -> pl.DataFrame:
    """One cost line of the cluster, split in two to check pools sum their lines exactly."""
    half = D(cost) / 2
    return pl.DataFrame(
        {
            "date": [DAY, DAY], "currency": ["USD", "USD"], "sub_account_id": ["1", "1"], "service": ["AmazonEC2"] * 2,
            "resource_id": ["i-0eksnode1", "i-0eksnode2"], "effective_cost": [half, D(cost) - half],
            "tags": [[], []],
        },
        schema_overrides={"effective_cost": pl.Decimal(38, 12), "tags": pl.List(pl.Struct({"key": pl.String, "value": pl.String}))},
    ).with_columns(pl.col("tags").cast(pl.Map(pl.String, pl.String)))


def _allocate(driver, cost="100", samples=None):
    pool = Pool(name="eks", owner_team="platform", select=PoolSelect(resource_prefixes=["i-0eks"]), driver=driver)
    schema = TaggingConfig()
    out = allocate(classify(_lines(cost), schema, [pool]), "v", [pool], _samples() if samples is None else samples)
    assert out["amount"].sum() == D(cost)  # every unit of the pool lands exactly once
    return {(r["team"], r["project"]): round(r["amount"], 2) for r in out.iter_rows(named=True)}


@pytest.mark.parametrize(
    ("basis", "idle", "expected"),
    [
        # a = .9*1/2 + .09*4/10 + .01*10/40 = .4885; b = .9*(1/7)/2 + .09*3/10 + .01*8/40 = .0932857...
        ("max_request_usage", "owner", {("fraud-detection", "txn-scoring"): D("48.85"), ("search-ranking", None): D("9.33"), ("platform", "__idle__"): D("41.82")}),
        # a = .9*7/8 + .09*4/7 + .01*10/18 = .8444841...; b = .9*1/8 + .09*3/7 + .01*8/18 = .1555158...
        ("max_request_usage", "share", {("fraud-detection", "txn-scoring"): D("84.45"), ("search-ranking", None): D("15.55")}),
        # a = .9*1/2 + .09*4/10 + .01*8/40 = .488; b = .9/14 + .09*2/10 + .01*8/40 = .0842857...
        ("requests", "owner", {("fraud-detection", "txn-scoring"): D("48.80"), ("search-ranking", None): D("8.43"), ("platform", "__idle__"): D("42.77")}),
        # a = .9*7/8 + .09*4/6 + .01*8/16 = .8525; b = .9*1/8 + .09*2/6 + .01*8/16 = .1475
        ("requests", "share", {("fraud-detection", "txn-scoring"): D("85.25"), ("search-ranking", None): D("14.75")}),
    ],
)
def test_kubernetes_pool_matches_hand_computed_cents(basis, idle, expected):
    assert _allocate(KubernetesDriver(kind="kubernetes", basis=basis, idle=idle)) == expected


def test_configured_weights_and_namespace_mapping():
    driver = KubernetesDriver(
        kind="kubernetes", basis="requests", idle="share", weights={"cpu": 1, "memory": 1},
        namespaces={"b": {"team": "forecasting", "project": "demand-forecast"}},
    )
    # cpu a 4/6 b 2/6, memory a 1/2 b 1/2, each half of the pool: a = 58.33..., b = 41.66...
    assert _allocate(driver) == {("fraud-detection", "txn-scoring"): D("58.33"), ("forecasting", "demand-forecast"): D("41.67")}


def test_pool_without_usage_stays_unattributed_with_a_reason():
    pool_driver = KubernetesDriver(kind="kubernetes")
    got = _allocate(pool_driver, samples=_samples().filter(pl.col("query") == "nothing"))
    assert got == {("__unattributed__", None): D("100.00")}


def test_metric_pool_splits_by_integral_and_maps_tenants():
    body = _body([({"user": "tenant-1"}, 3.0), ({"user": "tenant-2"}, 1.0), ({"user": "stranger"}, 1.0)])
    samples = parse_query_range(body, "series", DAY, "t")
    driver = MetricDriver(kind="metric", query="series", label="user", label_map={"tenant-1": "fraud-detection", "tenant-2": "platform"})
    pool = Pool(name="mon", select=PoolSelect(resource_prefixes=["i-0eks"]), driver=driver)
    schema = TaggingConfig(teams={"fraud-detection": Team(), "platform": Team()})
    out = allocate(classify(_lines("10"), schema, [pool]), "v", [pool], samples, schema)
    assert {r["team"]: r["amount"] for r in out.iter_rows(named=True)} == {"fraud-detection": D("6"), "platform": D("2"), "unknown": D("2")}


def test_metric_shares_are_the_same_on_every_run():
    """Tenants of one team add up in one order on every run: their sums came out of a group-by in any
    order, and three floats added in another order differ in their last bits (1e16 + 1 + 1 is 1e16 one
    way and 1e16 + 2 the other), so a rerun could move a cent between teams."""
    from cost_pipeline.lib.drivers.simple import metric_shares

    tenants = [({"user": "big"}, 1e16), ({"user": "small-1"}, 1.0), ({"user": "small-2"}, 1.0), ({"user": "other"}, 1e16)]
    tenants += [({"user": f"t{i}"}, 1.0) for i in range(40)]
    samples = parse_query_range(_body(tenants), "series", DAY, "t")
    label_map = {"big": "platform", "small-1": "platform", "small-2": "platform", "other": "forecasting"}
    label_map |= {f"t{i}": "platform" if i % 2 else "forecasting" for i in range(40)}
    driver = MetricDriver(kind="metric", query="series", label="user", label_map=label_map)
    runs = {tuple(metric_shares(samples, driver).rows()) for _ in range(30)}
    assert len(runs) == 1 and [r[0] for r in next(iter(runs))] == ["forecasting", "platform"]
    # teams spelled apart in the labels (cleaned into one by ``validated``) are added in one order too
    label_map = {**label_map, "big": "Platform", "small-1": "platform ", "small-2": " PLATFORM"}
    pool = Pool(name="mon", select=PoolSelect(resource_prefixes=["i-0eks"]), driver=driver.model_copy(update={"label_map": label_map}))
    schema = TaggingConfig(teams={"forecasting": Team(), "platform": Team()})
    runs = {tuple(driver_shares(pool, samples, schema, []).rows()) for _ in range(30)}
    assert len(runs) == 1 and [r[0] for r in next(iter(runs))] == ["forecasting", "platform"]


def test_fixed_and_even_drivers():
    fixed = _allocate(FixedDriver(kind="fixed", shares={"fraud-detection": 70, "platform": 30}), cost="33.33")
    assert fixed == {("fraud-detection", None): D("23.33"), ("platform", None): D("10.00")}
    with pytest.raises(ValueError, match="add up to 100"):
        FixedDriver(kind="fixed", shares={"a": 50})
    # even over teams with direct spend that day: none here, so the pool stays unattributed
    assert _allocate(EvenDriver(kind="even")) == {("__unattributed__", None): D("100.00")}


def test_split_exact_adds_up_to_the_last_unit():
    parts = split_exact(D("100.000000000001"), [1, 1, 1])
    assert sum(parts) == D("100.000000000001") and len(set(parts)) == 2
    assert split_exact(D("-0.03"), [1, 2]) == [D("-0.01"), D("-0.02")]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("nvidia.com/gpu", ("gpu", 1.0)), ("nvidia_com_gpu", ("gpu", 1.0)), ("nvidia.com/mig-1g.10gb", ("gpu", 1 / 7)),
     ("nvidia_com_mig_3g_40gb", ("gpu", 3 / 7)), ("cpu", ("cpu", 1.0)), ("memory", ("memory", 1.0)), ("ephemeral_storage", None)],
)
def test_resource_names_and_mig_slice_weights(name, kind):
    from cost_pipeline.lib.drivers.kubernetes import resource_kind

    assert resource_kind(name, 7) == kind


def test_a_pool_selected_by_the_eks_cluster_tag_takes_exactly_the_tagged_lines(sample_dir):
    """``select: {tags: {aws:eks:cluster-name: ml-shared}}``: CUR 2.0 delivers the key as
    ``aws_eks_cluster_name``; the same folding as schema keys matches it."""
    from cost_pipeline.config import Pool, bundled_config_path, load_settings
    from cost_pipeline.lib.allocate import allocate
    from cost_pipeline.lib.extracts import read_extracts
    from cost_pipeline.lib.pools import classify
    from cost_pipeline.sample.cur2 import EXPORT
    from cost_pipeline_tests.conftest import START, read_day

    settings = load_settings(bundled_config_path())
    pool = Pool.model_validate({"name": "eks-by-tag", "select": {"tags": {"aws:eks:cluster-name": "ml-shared"}},
                                "driver": {"kind": "kubernetes"}})
    lines = read_day("aws_cur2", sample_dir / "billing" / "aws", START)
    tagged = classify(lines, settings.tagging, [pool])
    raw = pl.read_parquet(sample_dir / "billing" / "aws" / "data" / f"BILLING_PERIOD={START:%Y-%m}" / f"{EXPORT}-{START.day:05d}.snappy.parquet")
    expected = raw.filter(pl.col("resource_tags").map.get("aws_eks_cluster_name") == "ml-shared")["identity_line_item_id"]
    assert expected.len() > 0
    assert sorted(tagged.filter(pl.col("pool") == "eks-by-tag")["line_item_id"].to_list()) == sorted(expected.to_list())
    allocated = allocate(tagged, "v", [pool], read_extracts(sample_dir / "usage", START), settings.tagging)
    shared = allocated.filter((pl.col("pool") == "eks-by-tag") & (pl.col("allocation") == "shared"))["amount"].sum()
    assert shared == lines.filter(pl.col("line_item_id").is_in(expected.implode()))["effective_cost"].sum()


REGISTRY = TaggingConfig(teams={"fraud-detection": Team(), "search-ranking": Team(), "platform": Team()})
HOSTILE = "\x1b[31mevil\x00\u202e```\n# owned"


def _relabelled(team_b: str) -> pl.DataFrame:
    """The hand-computed scenario with namespace b's team label replaced."""
    return _samples().with_columns(
        pl.col("labels").cast(pl.List(pl.Struct({"key": pl.String, "value": pl.String})))
        .list.eval(pl.struct(key=pl.element().struct.field("key"), value=pl.when(
            (pl.element().struct.field("key") == "label_ml_team") & (pl.element().struct.field("value") == "search-ranking"))
            .then(pl.lit(team_b)).otherwise(pl.element().struct.field("value"))))
        .cast(pl.Map(pl.String, pl.String))
    )


@pytest.mark.parametrize("label, reason", [("fraud-detecton", "unknown_team_label"), (HOSTILE, "unknown_team_label"),
                                           ("  Search-Ranking ", None)])
def test_usage_team_labels_are_validated_like_tags(label, reason):
    """A typo or hostile namespace label never becomes a team: its share (9.33 of 100, by hand, as
    in the max/owner case) goes to ``unknown`` with a reason; case and spaces are normalized."""
    pool = Pool(name="eks", owner_team="platform", select=PoolSelect(resource_prefixes=["i-0eks"]),
                driver=KubernetesDriver(kind="kubernetes", idle="owner"))
    out = allocate(classify(_lines("100"), REGISTRY, [pool]), "v", [pool], _relabelled(label), REGISTRY)
    got = {(r["team"], r["reason"]): round(r["amount"], 2) for r in out.iter_rows(named=True)}
    b_team = "search-ranking" if reason is None else "unknown"
    assert got == {("fraud-detection", None): D("48.85"), (b_team, reason): D("9.33"), ("platform", None): D("41.82")}
    assert out["amount"].sum() == D("100")


def test_metric_tenants_without_a_registry_must_look_like_team_names():
    body = _body([({"user": "fraud-detection"}, 3.0), ({"user": HOSTILE}, 1.0), ({}, 1.0)])
    pool = Pool(name="mon", select=PoolSelect(resource_prefixes=["i-0eks"]), driver=MetricDriver(kind="metric", query="s", label="user"))
    schema = TaggingConfig()
    out = allocate(classify(_lines("10"), schema, [pool]), "v", [pool], parse_query_range(body, "s", DAY, "t"), schema)
    got = {(r["team"], r["reason"]): r["amount"] for r in out.iter_rows(named=True)}
    assert got == {("fraud-detection", None): D("6"), ("unknown", "unknown_team_label"): D("2"), ("unknown", "missing_team_label"): D("2")}


def test_kubernetes_shares_are_the_same_on_every_run(sample_dir):
    """A rerun gives the same shares to the last bit, so the same cents: a day's sums come out of
    group-bys in any order, and floats added in another order differ in their last bits (two runs of
    the same backfill split a pool 1e-12 apart on 3 of 20 days)."""
    from cost_pipeline.config import bundled_config_path, load_settings
    from cost_pipeline.lib.drivers.kubernetes import kubernetes_shares
    from cost_pipeline.lib.extracts import read_extracts
    from cost_pipeline_tests.conftest import DAYS, START

    pool = next(p for p in load_settings(bundled_config_path()).allocation.pools if p.driver.kind == "kubernetes")
    for day in (START + dt.timedelta(days=d) for d in range(DAYS)):
        samples = read_extracts(sample_dir / "usage", day)
        runs = {tuple(kubernetes_shares(samples, pool.driver, pool.owner_team).sort(pl.all()).rows()) for _ in range(8)}
        assert len(runs) == 1 and len(next(iter(runs))) > 3, day


def test_a_request_series_without_a_namespace_goes_to_unknown_not_a_crash():
    """A requests series that lost its namespace label has no namespace attributes: its share goes to
    team unknown (missing_team_label), the rest by hand: cpu only, 8 of 10 cores to namespace a."""
    a = {"namespace": "a", "label_ml_team": "fraud-detection", "label_ml_project": "txn-scoring"}
    samples = parse_query_range(_body([({**a, "resource": "cpu"}, 8), ({"resource": "cpu"}, 2)]), "k8s_requests", DAY, "k8s_requests")
    got = _allocate(KubernetesDriver(kind="kubernetes", basis="requests", idle="share"), samples=samples)
    assert got == {("fraud-detection", "txn-scoring"): D("80.00"), ("unknown", None): D("20.00")}
