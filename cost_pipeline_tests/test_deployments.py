"""Deployments: instance configs load, compose and Helm values name only documented keys, the
production instance runs a range on a real PostgreSQL, and a range past the data fails cleanly."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from cost_pipeline_tests.conftest import START, cli, write_config
from cost_pipeline_tests.postgres_server import pg_bin, postgres

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deployments"
PG_ENV = {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "u", "DAGSTER_PG_PASSWORD": "p", "DAGSTER_PG_DB": "d"}
needs_postgres = pytest.mark.skipif(not pg_bin() and not os.environ.get("CI"), reason="Debian's postgresql is not installed (make test installs it)")

# Top-level values of the Dagster Helm chart 1.13.x (helm/dagster/values.yaml) and of docker compose services.
HELM_KEYS = {"global", "nameOverride", "fullnameOverride", "rbacEnabled", "imagePullSecrets", "serviceAccount", "postgresql",
             "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "dagsterWebserver", "computeLogManager", "pythonLogs",
             "dagster-user-deployments", "runLauncher", "dagsterDaemon", "busybox", "migrate", "telemetry", "ingress", "rabbitmq",
             "redis", "flower", "scheduler", "excludeConfigMapFromHelm", "retention", "additionalInstanceConfig", "extraManifests"}
COMPOSE_SERVICE_KEYS = {"image", "build", "command", "entrypoint", "environment", "env_file", "depends_on", "ports", "volumes",
                        "restart", "healthcheck", "container_name", "networks", "expose"}


def test_each_instance_config_loads(monkeypatch):
    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    for name in ("local", "production"):
        config, _ = dagster_instance_config(str(DEPLOY / name))
        assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
        limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert "postgres" in dagster_instance_config(str(DEPLOY / "production"))[0]["storage"]


def test_compose_and_helm_values_name_only_documented_keys():
    compose = yaml.safe_load((DEPLOY / "docker" / "docker-compose.yaml").read_text())
    assert set(compose) <= {"services", "volumes", "networks"}
    assert set(compose["services"]) == {"postgres", "user_code", "webserver", "daemon"}
    for name, service in compose["services"].items():
        assert set(service) <= COMPOSE_SERVICE_KEYS, name
    assert "cost_pipeline.definitions" in compose["services"]["user_code"]["command"]
    values = yaml.safe_load((DEPLOY / "kubernetes" / "values.yaml").read_text())
    assert set(values) <= HELM_KEYS
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator" and coordinator["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "cost_pipeline.definitions"]
    assert "1.13.27" in (DEPLOY / "kubernetes" / "values.yaml").read_text()


def test_iam_policies_are_least_privilege():
    for path in (DEPLOY / "aws").glob("*.json"):
        policy = json.loads(path.read_text())
        assert policy["Version"] == "2012-10-17"
        for statement in policy["Statement"]:
            actions = statement["Action"]
            assert all(a.startswith("s3:") and "*" not in a for a in actions), path.name
            assert statement["Resource"] != "*"
    read = json.loads((DEPLOY / "aws" / "cur-read-policy.json").read_text())
    assert {a for s in read["Statement"] for a in s["Action"]} == {"s3:ListBucket", "s3:GetObject"}
    roles = {p.stem: yaml.safe_load(p.read_text()) for p in (DEPLOY / "gcp").glob("*.yaml")}
    assert set(roles["lake-writer-role"]["includedPermissions"]) == {f"storage.objects.{v}" for v in ("list", "get", "create", "delete")}
    reader = set(roles["billing-reader-role"]["includedPermissions"])
    assert not {p for p in reader if p.split(".")[-1] in ("create", "delete", "update", "setIamPolicy")} - {"bigquery.jobs.create"}


def test_definitions_validate():
    done = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All code locations passed validation" in done.stdout + done.stderr


@needs_postgres
def test_a_range_runs_on_the_production_instance_with_postgresql(tmp_path, sample_dir, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "production" / "dagster.yaml", home / "dagster.yaml")
    config = write_config(tmp_path, sample_dir)
    image_env = dict(line.split(None, 1)[1].split("=", 1) for line in (DEPLOY / "docker" / "Dockerfile").read_text().splitlines() if line.startswith("ENV "))
    assert int(image_env["DAGSTER_EVENT_BATCH_SIZE"]) > 0  # the image's run workers batch their events
    with postgres() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", image_env["DAGSTER_EVENT_BATCH_SIZE"])
        done = cli("run", "--config", str(config), "--start", START.isoformat(), "--end", (START + dt.timedelta(days=1)).isoformat())
        assert done.returncode == 0, done.stderr[-3000:]
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs()
            assert {r.job_name for r in runs} == {"daily_costs_job", "reports_job"} and all(r.is_success for r in runs)
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            days = [START.isoformat(), (START + dt.timedelta(days=1)).isoformat()]
            for asset in ("cost_lines", "allocated_costs", "team_cost_detail"):  # batched, every day's event is there once
                records = instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
                assert sorted(r.partition_key for r in records) == days, asset
                assert all(r.asset_materialization.metadata["dagster/row_count"].value > 0 for r in records)
            checks = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("allocated_costs"), "allocation_conserves_cost_lines"), limit=10)
            assert sorted(c.partition for c in checks) == days


def test_a_range_past_the_delivered_days_fails_naming_them_and_writes_nothing(tmp_path, sample_dir):
    config = write_config(tmp_path, sample_dir)
    last = START + dt.timedelta(days=5)  # the sample holds four days
    done = cli("run", "--config", str(config), "--start", START.isoformat(), "--end", last.isoformat())
    assert done.returncode == 1
    missing = ", ".join((START + dt.timedelta(days=i)).isoformat() for i in (4, 5))
    assert f"cost_lines: no billing source has any line for {missing}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "lake").glob("cost_lines/date=*"))


def _jemalloc_options(env: dict) -> dict[str, str]:
    """The options Polars' jemalloc actually runs with, in a fresh process that imports the package
    first (as the CLI, the code server and run workers do), printed by jemalloc itself at exit."""
    code = ("import os, cost_pipeline; os.environ['_RJEM_MALLOC_CONF'] += ',stats_print:true,stats_print_opts:mdablxe'; "
            "import polars as pl; pl.DataFrame({'a': [1]}).sum()")
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"} | env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stderr
    return dict(line.strip().split(": ", 1) for line in out.splitlines() if line.strip().startswith("opt.") and ": " in line)


def test_polars_allocator_keeps_freed_pages_and_operator_value_wins():
    options = _jemalloc_options({})
    assert options["opt.narenas"] == str(max(1, (os.cpu_count() or 1) // 4))
    assert options["opt.dirty_decay_ms"].startswith("5000")
    assert options["opt.muzzy_decay_ms"].startswith("0")
    assert _jemalloc_options({"_RJEM_MALLOC_CONF": "dirty_decay_ms:700"})["opt.dirty_decay_ms"].startswith("700")
