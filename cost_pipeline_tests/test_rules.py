"""Rules as versioned code: a changed weight marks days stale, and `rules diff` previews the change."""

import subprocess
import sys

import dagster as dg
import polars as pl
import yaml
from dagster._core.definitions.data_version import (
    CachingStaleStatusResolver,
    StaleStatus,
)
from dagster._core.loader import LoadingContextForTest

from cost_pipeline.config import load_settings
from cost_pipeline.definitions import build_defs
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.rules_diff import allocate_days, diff_allocations
from cost_pipeline_tests.conftest import START
from cost_pipeline_tests.test_assets import _run


def _proposed(config_path, tmp_path):
    raw = yaml.safe_load(config_path.read_text())
    eks = next(p for p in raw["allocation"]["pools"] if p["name"] == "eks-shared")
    eks["driver"]["weights"] = {"cpu": 1, "memory": 1, "gpu": 1}  # was the default 9 : 0.9 : 0.1
    path = tmp_path / "proposed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _status(defs, instance, key, partition):
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(dg.AssetKey(key), partition)


def test_changed_weight_marks_materialized_days_stale(config_path, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config_path, instance, START, START).success
    current = build_defs(load_settings(config_path))
    assert _status(current, instance, "allocated_costs", START.isoformat()) == StaleStatus.FRESH
    proposed = build_defs(load_settings(_proposed(config_path, tmp_path)))
    assert _status(proposed, instance, "allocated_costs", START.isoformat()) == StaleStatus.STALE
    assert _status(proposed, instance, "cost_lines", START.isoformat()) == StaleStatus.FRESH


def test_rules_diff_shows_the_expected_per_team_delta(config_path, tmp_path):
    assert _run(config_path, dg.DagsterInstance.ephemeral(), START, START).success
    current, proposed = load_settings(config_path), load_settings(_proposed(config_path, tmp_path))
    lake = Lake.from_uri(current.lake_uri)
    before, after = allocate_days(lake, current, [START]), allocate_days(lake, proposed, [START])
    diff = diff_allocations(before, after)
    # only the EKS pool moves, its total is unchanged, and the lake still holds the current rules
    moved = diff.filter(pl.col("delta") != 0)
    assert set(moved["pool"]) == {"eks-shared"} and moved.height >= 2
    assert moved["delta"].sum() == 0
    written = pl.read_parquet(lake.day_path("allocated_costs", START))
    assert set(written["rules_version"]) == {current.rules_version}
    expected = after.filter(pl.col("pool") == "eks-shared").group_by("team").agg(pl.col("amount").sum())
    for team, amount in expected.iter_rows():
        row = diff.filter((pl.col("team") == team) & (pl.col("pool") == "eks-shared"))
        assert row["proposed"][0] == amount

    proc = subprocess.run(
        [sys.executable, "-m", "cost_pipeline.cli", "rules", "diff", "--config", str(config_path),
         "--proposed", str(_proposed(config_path, tmp_path)), "--start", START.isoformat(), "--end", START.isoformat()],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "eks-shared" in proc.stdout and "nothing was written" in proc.stdout
    assert pl.read_parquet(lake.day_path("allocated_costs", START)).equals(written)


def test_rules_apply_previews_adopts_and_backfills(config_path, tmp_path):
    from decimal import Decimal

    from cost_pipeline_tests.conftest import cli

    first = cli("run", "--config", str(config_path), "--start", START.isoformat(), "--end", START.isoformat())
    assert first.returncode == 0, first.stderr[-2000:]
    current, proposed_path = load_settings(config_path), _proposed(config_path, tmp_path)
    proposed = load_settings(proposed_path)
    args = ("rules", "apply", "--config", str(config_path), "--proposed", str(proposed_path), "--start", START.isoformat(), "--end", START.isoformat())
    preview = cli(*args)
    assert preview.returncode == 0 and "eks-shared" in preview.stdout and "re-run with --yes" in preview.stdout
    assert load_settings(config_path).rules_version == current.rules_version  # nothing adopted
    lake = Lake.from_uri(current.lake_uri)
    kept = {t: lake.day_path(t, START).stat().st_mtime_ns for t in ("cost_lines", "usage", "tag_sets")}
    applied = cli(*args, "--yes")
    assert applied.returncode == 0, applied.stderr[-2000:]
    assert load_settings(config_path).rules_version == proposed.rules_version
    assert (tmp_path / f"config.yaml.{current.rules_version}.bak").read_text() != config_path.read_text()
    written = pl.read_parquet(lake.day_path("allocated_costs", START))
    assert set(written["rules_version"]) == {proposed.rules_version}
    lines = pl.read_parquet(lake.day_path("cost_lines", START))
    assert written["amount"].sum() == lines["effective_cost"].sum() != Decimal(0)
    # the bill and the usage did not change: the backfill recomputed only what the rules decide
    assert {t: lake.day_path(t, START).stat().st_mtime_ns for t in kept} == kept
    later = START.replace(day=START.day + 1)
    unlanded = cli("run", "--config", str(config_path), "--rules-only", "--start", START.isoformat(), "--end", later.isoformat())
    assert unlanded.returncode == 2 and f"cost_lines, but the lake lacks {later}" in unlanded.stderr
    bundled = cli("rules", "apply", "--proposed", str(proposed_path), "--start", START.isoformat(), "--end", START.isoformat(), "--yes")
    assert bundled.returncode == 2 and "replaces your config file" in bundled.stderr


def test_rules_only_reports_each_days_checks_once(config_path, tmp_path, monkeypatch):
    """`run --rules-only` runs the rule-dependent assets, which report their checks day by day: the
    checks must not also run as steps of their own (a year's rules change spent 46 s re-reading every
    day for results the assets had already given)."""
    from collections import Counter

    from dagster import DagsterEventType

    from cost_pipeline_tests.conftest import cli

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    days = ("--start", START.isoformat(), "--end", START.isoformat())
    assert (first := cli("run", "--config", str(config_path), *days)).returncode == 0, first.stderr[-2000:]
    assert (again := cli("run", "--config", str(config_path), "--rules-only", *days)).returncode == 0, again.stderr[-2000:]
    with dg.DagsterInstance.get() as instance:
        run = next(r for r in instance.get_runs() if r.job_name == "daily_costs_job")  # newest first
        steps = {e.dagster_event.step_key for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_SUCCESS)}
        checks = Counter(
            (e.dagster_event.event_specific_data.asset_check_key.name, e.dagster_event.event_specific_data.partition)
            for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        )
    assert steps == {"attribution", "team_daily_costs", "team_cost_detail", "anomalies", "slack_notifications"}
    assert checks[("allocation_conserves_cost_lines", START.isoformat())] == 1
    assert checks and set(checks.values()) == {1}, checks
