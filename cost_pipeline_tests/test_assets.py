"""The daily assets through Dagster itself: ranged single runs, metadata, checks, bad input."""

import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from cost_pipeline.config import load_settings
from cost_pipeline.definitions import defs as load_defs
from cost_pipeline.defs.resources import resources_for
from cost_pipeline.lib.billing.schema import MAP_ENTRIES
from cost_pipeline.lib.pools import classify
from cost_pipeline_tests.conftest import DAYS, START, write_config

DAILY = ["cost_lines", "untagged_spend", "tag_compliance", "allocated_costs", "team_daily_costs"]
LAST = START + dt.timedelta(days=DAYS - 1)
ROOT = Path(__file__).resolve().parents[1]


def _run(config: Path, instance, first=START, last=LAST, raise_on_error=True):
    job = load_defs().resolve_job_def("daily_costs_job")
    return job.execute_in_process(
        instance=instance,
        resources=resources_for(load_settings(config)),
        tags={ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()},
        raise_on_error=raise_on_error,
    )


def test_definitions_load():
    assert {k.to_user_string() for k in load_defs().resolve_all_asset_keys()} >= {*DAILY, "team_reports"}


def test_ranged_run_writes_every_day_and_reconciles(config_path, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = _run(config_path, instance)
    assert result.success
    lake = tmp_path / "lake"
    for table in ["cost_lines", "untagged_spend", "tag_compliance", "allocated_costs", "team_daily_costs"]:
        days = sorted(p.name for p in (lake / table).iterdir())
        assert days == [f"date={START + dt.timedelta(days=i)}" for i in range(DAYS)]
    allocated = pl.read_parquet(lake / "allocated_costs" / "*" / "*.parquet")
    assert allocated.columns[:11] == ["date", "team", "project", "workload_type", "environment", "experiment_id",
                                      "allocation", "pool", "amount", "currency", "rules_version"]
    lines = pl.read_parquet(lake / "cost_lines" / "*" / "*.parquet")
    assert "tags" not in lines.columns  # each distinct map is stored once, in tag_sets: a reader joins them back
    maps = pl.read_parquet(lake / "tag_sets" / "*" / "*.parquet").unique("tag_set")
    assert lines["tag_set"].is_in(maps["tag_set"].implode()).all() and maps.height < lines.height / 2
    lines = lines.join(maps, on="tag_set", how="left", maintain_order="left")
    # ... and DuckDB, with the README's own query, gets every line once with the same tags
    query = re.search(r"`(SELECT l\.\*, t\.tags FROM .*?)`", (ROOT / "README.md").read_text(), re.S).group(1)
    duck = duckdb.sql(query.replace("'lake/", f"'{lake}/")).pl()
    assert duck.height == lines.height and duck["effective_cost"].sum() == lines["effective_cost"].sum()
    by_id = lambda f: dict(zip(f["line_item_id"], f["tags"].cast(MAP_ENTRIES).to_list()))  # noqa: E731
    assert by_id(duck) == by_id(lines)
    per_day = lambda f, c: f.group_by("date", "currency").agg(pl.col(c).sum()).sort("date")  # noqa: E731
    assert per_day(allocated, "amount")["amount"].to_list() == per_day(lines, "effective_cost")["effective_cost"].to_list()

    # every pool's cost is fully shared or explicitly unattributed, day by day, to the last digit
    settings = load_settings(config_path)
    pooled = classify(lines, settings.tagging, settings.allocation.pools).filter(pl.col("pool").is_not_null())
    pool_cost = pooled.group_by("date", "pool").agg(pl.col("effective_cost").sum()).sort("date", "pool")
    pool_alloc = allocated.filter(pl.col("pool").is_not_null()).group_by("date", "pool").agg(pl.col("amount").sum()).sort("date", "pool")
    assert pool_cost.height == DAYS * 4
    assert pool_cost["effective_cost"].to_list() == pool_alloc["amount"].to_list()
    assert set(allocated.filter(pl.col("pool").is_not_null())["allocation"]) == {"shared"}

    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert {c.asset_check_evaluation_data.check_name: c.asset_check_evaluation_data.passed for c in checks} == {
        "allocation_conserves_cost_lines": True, "untagged_share_below_warn": True, "untagged_share_below_error": True,
        "usage_covers_pools": True, "team_daily_costs_equal_allocated_costs": True, "team_cost_detail_equals_allocated_costs": True,
    }
    assert len(checks) == 6 * DAYS  # one result per check and day

    untagged = instance.fetch_materializations(dg.AssetKey("untagged_spend"), limit=10).records
    shares = [r.event_log_entry.asset_materialization.metadata["untagged % (USD)"].value for r in untagged]
    assert len(shares) == DAYS and all(2 < s < 20 and round(s, 2) == s for s in shares)
    top = untagged[0].event_log_entry.asset_materialization.metadata["top_untagged_resources"].value
    assert top.startswith("| resource | account |")

    # metadata is recorded per partition, with that partition's own numbers
    records = instance.fetch_materializations(dg.AssetKey("cost_lines"), limit=10).records
    by_day = {r.event_log_entry.asset_materialization.partition: r.event_log_entry.asset_materialization.metadata for r in records}
    assert len(by_day) == DAYS
    for day, meta in by_day.items():
        day_rows = lines.filter(pl.col("date") == dt.date.fromisoformat(day))
        assert meta["dagster/row_count"].value == day_rows.height
        assert meta["effective_cost (USD)"].value == pytest.approx(float(round(day_rows["effective_cost"].sum(), 2)))
        assert "billed_cost" in [c.name for c in meta["dagster/column_schema"].schema.columns]


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _set_value(column: str, value, cast: pa.DataType | None = None):
    """Change one Usage line's ``column`` (as ``cast``, e.g. amounts as text) in a CUR 2.0 file."""
    def change(path: Path) -> None:
        table = pq.read_table(path)
        row = table["line_item_line_item_type"].to_pylist().index("Usage")
        values = table[column].to_pylist()
        values[row] = value
        kind = cast or table.schema.field(column).type
        values = [v if v is None or cast is None or i == row else str(v) for i, v in enumerate(values)]
        pq.write_table(table.set_column(table.schema.get_field_index(column), column, pa.array(values, kind)), path)
    return change


@pytest.mark.parametrize("corrupt, problem", [
    (_truncated, "not a readable Parquet file"),
    # checked from the write pass's own sums, then named by re-reading the file alone
    (_set_value("line_item_unblended_cost", None), r"1 line\(s\) without an amount, e\.g\. line \S+ \(Usage\)"),
    (_set_value("line_item_currency_code", "US$"), r"unknown currency 'US\$' on 1 line\(s\)"),
    (_set_value("line_item_unblended_cost", "12,5 EUR", pa.string()), "cannot read billing data"),
], ids=["truncated", "no-amount", "currency", "unparseable-amount"])
def test_bad_file_fails_the_run_and_keeps_the_previous_day(tmp_path, sample_dir, corrupt, problem):
    billing = tmp_path / "aws"
    shutil.copytree(sample_dir / "billing" / "aws", billing)
    config = write_config(tmp_path, sample_dir, billing_sources=[{"name": "aws-main", "format": "aws_cur2", "uri": str(billing)}])
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance, START, START).success
    good = (tmp_path / "lake" / "cost_lines" / f"date={START}" / "part-0.parquet").read_bytes()

    bad = billing / "data" / f"BILLING_PERIOD={START:%Y-%m}" / f"acme-ml-cur2-{START.day:05d}.snappy.parquet"
    corrupt(bad)
    result = _run(config, instance, START, START, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert f"{bad}: " in failure.step_failure_data.error.message
    assert re.search(problem, failure.step_failure_data.error.message), failure.step_failure_data.error.message
    assert (tmp_path / "lake" / "cost_lines" / f"date={START}" / "part-0.parquet").read_bytes() == good
    assert not list((tmp_path / "lake" / "cost_lines" / f"date={START}").glob(".tmp-*"))


def test_cli_run_records_runs_in_dagster_home(tmp_path, config_path, monkeypatch):
    """With ``make demo``'s instance config (the pooled SQLite event log): every day's events are
    recorded, and a home without that config (Dagster's stock storage) reads the same."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "deployments" / "local" / "dagster.yaml", home)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "cost_pipeline.cli", "run", "--config", str(config_path),
         "--start", START.isoformat(), "--end", LAST.isoformat()],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Untagged (quarantined) share" in proc.stdout
    assert (tmp_path / "lake" / "reports" / "summary.md").exists()
    team_files = sorted((tmp_path / "lake" / "reports" / "teams").glob("*.csv"))
    assert len(team_files) >= 5
    for path in team_files:  # a team's file holds its own rows only
        teams = set(pl.read_csv(path)["team"])
        assert teams == ({"__unattributed__"} if path.stem == "unattributed" else {path.stem})
    assert not list((home / "history" / "runs").glob("*.db-wal"))  # the CLI's connections closed at exit, WALs folded in
    stock = tmp_path / "stock_home"
    shutil.copytree(home, stock)
    (stock / "dagster.yaml").unlink()
    days = {(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)}
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the local config's storage is at $DAGSTER_HOME
    for where in (home, stock):
        with dg.DagsterInstance.from_config(str(where)) as instance:
            assert type(instance.event_log_storage).__name__ == ("PooledSqliteEventLogStorage" if where == home else "SqliteEventLogStorage")
            runs = instance.get_runs()
            assert {r.job_name for r in runs} == {"daily_costs_job", "reports_job"}
            assert all(r.is_success for r in runs)
            for asset in DAILY:
                records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
                assert sorted(r.partition_key for r in records) == sorted(days), asset  # each day once
            daily = next(r for r in runs if r.job_name == "daily_costs_job")
            checks = [e for e in instance.all_logs(daily.run_id) if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
            assert len(checks) == 6 * DAYS  # six per-day checks


def test_definitions_validate_cli():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def _check_outcomes(result):
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_untagged_share_above_error_threshold_holds_back_reports(tmp_path, sample_dir):
    import yaml

    from cost_pipeline.config import bundled_config_path

    tagging = yaml.safe_load(bundled_config_path().read_text())["tagging"]
    config = write_config(tmp_path, sample_dir, tagging={**tagging, "untagged_warn_share": 0.01, "untagged_error_share": 0.05})
    result = _run(config, dg.DagsterInstance.ephemeral(), START, START, raise_on_error=False)
    outcomes = _check_outcomes(result)
    assert outcomes["untagged_share_below_warn"] is False and outcomes["untagged_share_below_error"] is False
    assert not result.success
    assert (tmp_path / "lake" / "allocated_costs" / f"date={START}").exists()
    assert not (tmp_path / "lake" / "team_daily_costs").exists()


def test_untagged_share_above_warn_only_warns(tmp_path, sample_dir):
    import yaml

    from cost_pipeline.config import bundled_config_path

    tagging = yaml.safe_load(bundled_config_path().read_text())["tagging"]
    config = write_config(tmp_path, sample_dir, tagging={**tagging, "untagged_warn_share": 0.01})
    result = _run(config, dg.DagsterInstance.ephemeral(), START, START)
    assert result.success
    assert _check_outcomes(result)["untagged_share_below_warn"] is False
    assert (tmp_path / "lake" / "team_daily_costs" / f"date={START}").exists()


def test_dg_materialize_over_a_partition_range(config_path, tmp_path):
    from cost_pipeline.defs.billing.assets import cost_lines
    from cost_pipeline.defs.compliance.assets import attribution
    from cost_pipeline.defs.usage.assets import usage

    result = dg.materialize(
        [cost_lines, usage, attribution], selection=["cost_lines", "usage", "allocated_costs"],
        resources=resources_for(load_settings(config_path)),
        instance=dg.DagsterInstance.ephemeral(),
        tags={ASSET_PARTITION_RANGE_START_TAG: START.isoformat(), ASSET_PARTITION_RANGE_END_TAG: LAST.isoformat()},
    )
    assert result.success
    partitions = {m.partition for m in result.asset_materializations_for_node("attribution") if m.asset_key == dg.AssetKey("allocated_costs")}
    assert partitions == {(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)}
    assert not {m.asset_key for m in result.asset_materializations_for_node("attribution")} - {dg.AssetKey("allocated_costs")}  # only what was selected
    conservation = [e for e in result.get_asset_check_evaluations() if e.check_name == "allocation_conserves_cost_lines"]
    assert len(conservation) == DAYS and all(e.passed for e in conservation)


def test_cli_run_fails_with_the_file_and_problem(tmp_path, sample_dir):
    billing = tmp_path / "aws"
    shutil.copytree(sample_dir / "billing" / "aws", billing)
    bad = billing / "data" / f"BILLING_PERIOD={START:%Y-%m}" / f"acme-ml-cur2-{START.day:05d}.snappy.parquet"
    bad.write_bytes(b"PAR1 not really")
    config = write_config(tmp_path, sample_dir, billing_sources=[{"name": "aws-main", "format": "aws_cur2", "uri": str(billing)}])
    proc = subprocess.run(
        [sys.executable, "-m", "cost_pipeline.cli", "run", "--config", str(config), "--start", START.isoformat(), "--end", START.isoformat()],
        capture_output=True, text=True, env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}, timeout=300,
    )
    assert proc.returncode == 1
    assert f"{bad}: not a readable Parquet file" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_contract_dagster_cli_recomputes_a_range(config_path, tmp_path):
    """Contract point 6: `dagster asset materialize ... --select cost_lines,untagged_spend,allocated_costs`."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "COST_PIPELINE_CONFIG": str(config_path)}
    (tmp_path / "home").mkdir()
    dagster = str(Path(sys.executable).parent / "dagster")
    rng = f"{START}...{LAST}"
    for select in ("cost_lines,usage", "cost_lines,untagged_spend,allocated_costs"):
        proc = subprocess.run(
            [dagster, "asset", "materialize", "-m", "cost_pipeline.definitions", "--select", select, "--partition-range", rng],
            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    for table in ("untagged_spend", "allocated_costs"):
        assert len(list((tmp_path / "lake" / table).iterdir())) == DAYS
    assert not (tmp_path / "lake" / "tag_compliance").exists()  # not selected, not written


def test_checks_report_one_result_per_day_and_run_on_their_own(config_path):
    import datetime as dt

    from dagster._core.definitions.asset_key import AssetCheckKey

    from cost_pipeline.config import load_settings
    from cost_pipeline.definitions import build_defs
    from cost_pipeline.defs.resources import resources_for

    instance = dg.DagsterInstance.ephemeral()
    last = START + dt.timedelta(days=1)
    result = _run(config_path, instance, START, last)
    assert result.success
    evaluations = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    per_check = {}
    for e in evaluations:
        per_check.setdefault(e.check_name, []).append((e.partition, e.passed))
    days = [START.isoformat(), last.isoformat()]
    for name in ("allocation_conserves_cost_lines", "untagged_share_below_warn", "untagged_share_below_error"):
        assert sorted(per_check[name]) == [(d, True) for d in days], name

    defs = build_defs(load_settings(config_path))
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_check_selection={AssetCheckKey(dg.AssetKey("allocated_costs"), "allocation_conserves_cost_lines"),
                               AssetCheckKey(dg.AssetKey("untagged_spend"), "untagged_share_below_error")},
        asset_selection=set(),
    )
    alone = job.execute_in_process(instance=instance, partition_key=last.isoformat(), resources=resources_for(load_settings(config_path)))
    assert alone.success
    got = sorted((e.asset_check_evaluation_data.check_name, e.asset_check_evaluation_data.partition, e.asset_check_evaluation_data.passed)
                 for e in alone.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert got == [("allocation_conserves_cost_lines", last.isoformat(), True), ("untagged_share_below_error", last.isoformat(), True)]


def test_conservation_reads_a_replaced_days_lines_not_the_ingests_totals(config_path):
    """The check compares allocated_costs with the day's cost lines; for a file the ingest wrote it takes
    the totals the ingest recorded beside the file's version, so a file replaced afterwards (here one
    cent more on one line) must be read again: the check then fails by exactly that cent."""
    from decimal import Decimal

    from dagster._core.definitions.asset_key import AssetCheckKey

    from cost_pipeline.definitions import build_defs
    from cost_pipeline.lib.lake import Lake

    settings = load_settings(config_path)
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config_path, instance, START, START).success
    path = Lake.from_uri(settings.lake_uri).day_path("cost_lines", START)
    lines = pl.read_parquet(path)
    currency = lines["currency"][0]
    cent = pl.lit(Decimal("0.01")).cast(lines.schema["effective_cost"])
    lines.with_columns(effective_cost=pl.when(pl.int_range(pl.len()) == 0).then(pl.col("effective_cost") + cent)
                       .otherwise(pl.col("effective_cost"))).write_parquet(path)
    job = build_defs(settings).resolve_implicit_global_asset_job_def().get_subset(
        asset_check_selection={AssetCheckKey(dg.AssetKey("allocated_costs"), "allocation_conserves_cost_lines")}, asset_selection=set())
    alone = job.execute_in_process(instance=instance, partition_key=START.isoformat(), resources=resources_for(settings), raise_on_error=False)
    evaluation = next(e.asset_check_evaluation_data for e in alone.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert not evaluation.passed
    assert evaluation.description == f"allocated_costs differ from cost_lines: {currency} -0.010000000000"


def test_new_checks_fail_on_a_short_usage_day_and_a_tampered_team_table(tmp_path, sample_dir):
    """usage_covers_pools names the pool and query whose samples stop early; the team tables' checks,
    run alone for a day, catch one cent missing from a team table written outside the pipeline."""
    import json
    from decimal import Decimal

    from dagster._core.definitions.asset_key import AssetCheckKey

    from cost_pipeline.definitions import build_defs

    usage = tmp_path / "usage"
    shutil.copytree(sample_dir / "usage", usage)
    extract = usage / f"date={START}" / "k8s_requests.json"
    body = json.loads(extract.read_text())
    noon = dt.datetime.combine(START, dt.time(12), tzinfo=dt.UTC).timestamp()
    for series in body["data"]["result"]:  # Prometheus lost the afternoon
        series["values"] = [v for v in series["values"] if float(v[0]) < noon]
    extract.write_text(json.dumps(body))
    config = write_config(tmp_path, sample_dir, usage={"extracts_uri": str(usage), "prometheus_url": None})
    instance = dg.DagsterInstance.ephemeral()
    result = _run(config, instance, START, START)
    assert result.success  # a warning, not a failure
    coverage = next(e.asset_check_evaluation_data for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.asset_check_evaluation_data.check_name == "usage_covers_pools")
    assert not coverage.passed and coverage.severity == dg.AssetCheckSeverity.WARN
    assert "eks-shared: k8s_requests (12 h)" in coverage.description

    path = tmp_path / "lake" / "team_daily_costs" / f"date={START}" / "part-0.parquet"
    table = pl.read_parquet(path)
    pl.concat([table.head(1).with_columns(pl.col("total") - Decimal("0.01")), table.slice(1)]).write_parquet(path)
    defs = build_defs(load_settings(config))
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_check_selection={AssetCheckKey(dg.AssetKey("team_daily_costs"), "team_daily_costs_equal_allocated_costs"),
                               AssetCheckKey(dg.AssetKey("team_cost_detail"), "team_cost_detail_equals_allocated_costs")},
        asset_selection=set(),
    )
    alone = job.execute_in_process(instance=instance, partition_key=START.isoformat(), resources=resources_for(load_settings(config)),
                                   raise_on_error=False)
    got = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data for e in alone.all_events
           if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert got["team_cost_detail_equals_allocated_costs"].passed
    failed = got["team_daily_costs_equal_allocated_costs"]
    assert not failed.passed and "differs from allocated_costs: USD -0.01" in failed.description


def test_days_are_independent_runs_in_parallel_processes_and_backfills_split_by_config(tmp_path, sample_dir):
    """Scaling past one process: two runs of different days at the same time on one lake (as parallel
    pods would), each day complete; ``operations.backfill_days_per_run`` makes backfills multi-run.
    Every usage extract is parsed while streaming here (``stream_documents_above_mb: 0``)."""
    config = write_config(tmp_path, sample_dir, operations={"backfill_days_per_run": 2},
                          usage={"extracts_uri": str(sample_dir / "usage"), "prometheus_url": None, "stream_documents_above_mb": 0})
    policy = subprocess.run(
        [sys.executable, "-c", "from cost_pipeline.definitions import defs; "
         "print(defs().resolve_assets_def('cost_lines').backfill_policy)"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COST_PIPELINE_CONFIG": str(config)})
    assert policy.returncode == 0, policy.stderr[-2000:]
    assert "multi_run(max_partitions_per_run=2)" in policy.stdout

    halves = [(START, START + dt.timedelta(days=1)), (START + dt.timedelta(days=2), LAST)]
    procs = [
        subprocess.Popen([sys.executable, "-m", "cost_pipeline.cli", "run", "--config", str(config), "--start", a.isoformat(), "--end", b.isoformat()],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "DAGSTER_HOME": str(tmp_path / f"home{i}")})
        for i, (a, b) in enumerate(halves)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    raw = pl.read_parquet(sample_dir / "billing" / "aws" / "data" / "*" / "*.parquet").with_columns(
        day=pl.col("line_item_usage_start_date").dt.date())
    lake = tmp_path / "lake"
    for offset in range(DAYS):
        day = START + dt.timedelta(days=offset)
        lines = pl.read_parquet(lake / "cost_lines" / f"date={day}" / "part-0.parquet")
        allocated = pl.read_parquet(lake / "allocated_costs" / f"date={day}" / "part-0.parquet")
        assert lines.height == raw.filter(pl.col("day") == day).height  # lines in == lines out, per day
        assert allocated["amount"].sum() == lines["effective_cost"].sum()
        # samples in == samples out, per day and query, counted from the extracts with plain json
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
        by_hand = {}
        for extract in (sample_dir / "usage" / f"date={day}").glob("*.json"):
            result = json.loads(extract.read_text())["data"]["result"]
            kept = [float(v) for series in result for t, v in series["values"] if start <= float(t) < start + 86400 and math.isfinite(float(v))]
            by_hand[extract.stem] = (len(kept), sum(kept))
        usage = pl.read_parquet(lake / "usage" / f"date={day}" / "part-0.parquet").group_by("query").agg(pl.len(), pl.col("value").sum())
        assert by_hand and all(n for n, _ in by_hand.values())  # a day without extracts or samples would prove nothing
        assert {q: (n, pytest.approx(v)) for q, n, v in usage.iter_rows()} == by_hand


def test_team_months_check_passes_on_the_reports_run_and_catches_a_missing_cent(tmp_path, sample_dir):
    from decimal import Decimal

    from dagster._core.definitions.asset_key import AssetCheckKey

    from cost_pipeline.definitions import build_defs

    config = write_config(tmp_path, sample_dir)
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance).success
    defs, resources = build_defs(load_settings(config)), resources_for(load_settings(config))
    reports = defs.resolve_job_def("reports_job").execute_in_process(instance=instance, resources=resources)
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data for e in reports.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["team_months_equal_allocated_costs"].passed

    path = tmp_path / "lake" / "team_months" / "part-0.parquet"
    months = pl.read_parquet(path)
    first = months.row(0, named=True)
    pl.concat([months.head(1).with_columns(pl.col("total") - Decimal("0.01")), months.slice(1)]).write_parquet(path)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_check_selection={AssetCheckKey(dg.AssetKey("team_months"), "team_months_equal_allocated_costs")}, asset_selection=set())
    alone = job.execute_in_process(instance=instance, resources=resources, raise_on_error=False)
    failed = next(e.asset_check_evaluation_data for e in alone.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert not failed.passed and f"{first['month']} {first['currency']}: allocated" in failed.description
