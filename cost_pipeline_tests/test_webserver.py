"""The Dagster UI as an operator uses it: dagster-webserver on loopback, its GraphQL API, and the
asset graph in headless Chromium. One partition is launched and must succeed; after a rule change
and a reload, exactly the rule-dependent partitions are stale."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from cost_pipeline_tests.conftest import START, write_config
from cost_pipeline_tests.test_dashboards import CHROMIUM, needs_chromium

ROOT = Path(__file__).resolve().parents[1]
LOCATION = "cost_pipeline"

ASSETS = """{ assetNodes { assetKey { path } groupName description kinds
  owners { ... on UserAssetOwner { email } ... on TeamAssetOwner { team } }
  assetChecksOrError { ... on AssetChecks { checks { name } } } } }"""
REPO = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name
  schedules { name description } sensors { name } jobs { name } } } } }"""
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""
DAILY = ["cost_lines", "usage", "untagged_spend", "tag_compliance", "allocated_costs", "team_daily_costs", "team_cost_detail"]
STALE = """query($p: String!, $keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) { assetKey { path } staleStatus(partition: $p) } }"""
RELOAD = """mutation($l: String!) { reloadRepositoryLocation(repositoryLocationName: $l) {
  __typename ... on WorkspaceLocationEntry { locationOrLoadError { __typename } } } }"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webserver(tmp_path, sample_dir):
    config = write_config(tmp_path, sample_dir, partitions_start_date=START.isoformat())
    home = tmp_path / "home"
    home.mkdir()
    # the local instance's storage (the pooled SQLite event log, read here while a run worker writes);
    # runs start at once (no daemon here to dequeue them)
    local = yaml.safe_load((ROOT / "deployments" / "local" / "dagster.yaml").read_text())
    (home / "dagster.yaml").write_text(yaml.safe_dump({
        "telemetry": {"enabled": False}, "storage": local["storage"],
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"},
    }))
    port = _port()
    env = {**os.environ, "COST_PIPELINE_CONFIG": str(config), "DAGSTER_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w", str(ROOT / "workspace.yaml")],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok and _gql(url, REPO)["repositoriesOrError"].get("nodes"):
                    break
            except (requests.RequestException, KeyError):
                pass
            time.sleep(1)
        else:
            raise AssertionError("dagster-webserver did not load the code location in 180 s")
        yield url, config
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _gql(url: str, query: str, **variables) -> dict:
    reply = requests.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60)
    reply.raise_for_status()
    body = reply.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def test_the_ui_lists_everything_runs_a_partition_and_shows_a_rule_change_as_stale(webserver):
    url, config = webserver
    nodes = _gql(url, ASSETS)["assetNodes"]
    names = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert {"cost_lines", "allocated_costs", "dashboards", "chargeback_statements", "anomalies", "slack_notifications"} <= set(names)
    for name, node in names.items():
        assert node["groupName"] and node["description"] and node["kinds"] and node["owners"], name
    checks = {c["name"] for n in nodes for c in (n["assetChecksOrError"] or {}).get("checks", [])}
    assert {"cost_lines_match_bill", "allocation_conserves_cost_lines", "untagged_share_below_error"} <= checks
    repo = _gql(url, REPO)["repositoriesOrError"]["nodes"][0]
    assert [s["name"] for s in repo["schedules"]] == ["daily_costs_job_schedule"] and repo["schedules"][0]["description"]
    assert {"aws_main_deliveries", "follow_upstream_days"} <= {s["name"] for s in repo["sensors"]}

    params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": repo["name"], "jobName": "daily_costs_job"},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": START.isoformat()}]}}
    launched = _gql(url, LAUNCH, p=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.time() + 300
    while (status := _gql(url, RUN, id=run_id)["runOrError"]["status"]) not in ("SUCCESS", "FAILURE", "CANCELED"):
        assert time.time() < deadline, status
        time.sleep(2)
    assert status == "SUCCESS"

    def stale() -> dict:
        return {"/".join(n["assetKey"]["path"]): n["staleStatus"] for n in _gql(url, STALE, p=START.isoformat(), keys=[{"path": [k]} for k in DAILY])["assetNodes"]}

    before = stale()
    assert before["allocated_costs"] == before["cost_lines"] == "FRESH"
    raw = yaml.safe_load(config.read_text())
    next(p for p in raw["allocation"]["pools"] if p["name"] == "eks-shared")["driver"]["idle"] = "owner"
    config.write_text(yaml.safe_dump(raw))
    assert _gql(url, RELOAD, l=LOCATION)["reloadRepositoryLocation"]["__typename"] == "WorkspaceLocationEntry"
    after = stale()
    assert {k for k, v in after.items() if v == "STALE"} == {"allocated_costs", "untagged_spend", "tag_compliance"}


@needs_chromium
def test_the_asset_graph_loads_in_chromium(webserver):
    from playwright.sync_api import sync_playwright

    url, _ = webserver
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/asset-groups", wait_until="domcontentloaded")
        page.get_by_text("Global asset lineage").first.wait_for(timeout=60_000)
        if page.get_by_role("button", name="Skip").count():  # the first-visit community dialog
            page.get_by_role("button", name="Skip").click()
        for group in ("billing", "compliance", "allocation", "usage", "reports", "alerts"):
            page.get_by_text(group, exact=True).first.wait_for(timeout=60_000)
        page.goto(f"{url}/assets/allocated_costs?view=lineage", wait_until="domcontentloaded")  # its upstream graph
        for upstream in ("cost_lines", "usage"):
            page.get_by_text(upstream, exact=True).first.wait_for(timeout=60_000)
        assert errors == []
        browser.close()
