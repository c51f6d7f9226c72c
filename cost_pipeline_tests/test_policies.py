"""Guardrail policies generated from the tag schema, checked against each format's structure."""

import json
import re
import subprocess
import sys

import yaml

from cost_pipeline.config import TaggingConfig, Team, bundled_config_path, load_settings
from cost_pipeline.lib.policies import (
    aws_scp,
    aws_tag_policy,
    azure_policy,
    gcp_custom_constraint,
)

# The seed's example: deny launching an instance whose request lacks the ml-team tag.
SEED_SCP_STATEMENT = {
    "Effect": "Deny",
    "Action": "ec2:RunInstances",
    "Resource": "arn:aws:ec2:*:*:instance/*",
    "Condition": {"Null": {"aws:RequestTag/ml-team": "true"}},
}
REQUIRED = ["ml-team", "ml-project", "ml-workload-type", "ml-environment"]


def _as_list(value):
    return value if isinstance(value, list) else [value]


def test_scp_for_ml_team_is_the_seed_example():
    scp = aws_scp(TaggingConfig())
    team = [s for s in scp["Statement"] if "aws:RequestTag/ml-team" in s["Condition"]["Null"]]
    assert len(team) == 1
    statement = team[0]
    assert {k: statement[k] for k in SEED_SCP_STATEMENT} == SEED_SCP_STATEMENT
    assert _as_list(statement["Action"]) == _as_list(SEED_SCP_STATEMENT["Action"])


def test_scp_follows_iam_grammar_and_covers_each_required_key():
    scp = aws_scp(TaggingConfig())
    assert scp["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in scp["Statement"]]
    assert len(set(sids)) == len(sids) and all(re.fullmatch(r"[A-Za-z0-9]+", s) for s in sids)
    for s in scp["Statement"]:
        assert set(s) == {"Sid", "Effect", "Action", "Resource", "Condition"} and s["Effect"] == "Deny"
        assert all(re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9*]+", a) for a in _as_list(s["Action"]))
    covered = sorted(k.split("/", 1)[1] for s in scp["Statement"] for k in s["Condition"]["Null"])
    assert covered == sorted(REQUIRED)  # ml-experiment-id is conditional, so not enforceable by Null alone


def test_tag_policy_assigns_allowed_values_and_key_casing():
    schema = TaggingConfig(teams={"fraud-detection": Team(), "platform": Team()})
    policy = aws_tag_policy(schema)["tags"]
    assert policy["ml-team"]["tag_value"] == {"@@assign": ["fraud-detection", "platform"]}
    assert policy["ml-environment"]["tag_value"] == {"@@assign": ["dev", "prod", "staging"]}
    assert policy["ml-environment"]["enforced_for"] == {"@@assign": ["ec2:instance"]}
    assert all(entry["tag_key"] == {"@@assign": key} for key, entry in policy.items())
    assert "tag_value" not in policy["ml-project"]  # a regex cannot be expressed in a tag policy


def test_azure_policy_denies_when_a_tag_is_missing():
    rule = azure_policy(TaggingConfig())["properties"]
    assert rule["mode"] == "Indexed" and rule["policyType"] == "Custom"
    assert rule["policyRule"]["then"] == {"effect": "deny"}
    assert rule["policyRule"]["if"]["anyOf"] == [{"field": f"tags['{k}']", "exists": "false"} for k in REQUIRED]


def test_gcp_constraint_structure():
    c = gcp_custom_constraint(TaggingConfig())
    assert re.fullmatch(r"organizations/[^/]+/customConstraints/custom\.[A-Za-z]+", c["name"])
    assert c["actionType"] == "DENY" and set(c["methodTypes"]) <= {"CREATE", "UPDATE"}
    assert all(f"'{k}' in resource.labels" in c["condition"] for k in REQUIRED)


def test_cli_writes_parseable_files(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cost_pipeline.cli", "policies", "--config", str(bundled_config_path()), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ["aws_scp.json", "aws_tag_policy.json", "azure_policy.json"]:
        json.loads((tmp_path / name).read_text())
    gcp = yaml.safe_load((tmp_path / "gcp_custom_constraint.yaml").read_text())
    assert gcp["actionType"] == "DENY"
    teams = json.loads((tmp_path / "aws_tag_policy.json").read_text())["tags"]["ml-team"]["tag_value"]["@@assign"]
    assert teams == sorted(load_settings(bundled_config_path()).tagging.teams)
