import pytest

from cost_pipeline.config import ConfigError, load_settings


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


CONTRACT_ONLY = """
lake_uri: ./lake
billing_sources:
  - {name: aws-main, format: aws_cur2, uri: ./data/billing/aws}
usage:
  extracts_uri: ./data/usage
  prometheus_url: null
slack:
  outbox_uri: ./lake/_outbox
"""


def test_contract_keys_alone_are_a_valid_config(tmp_path):
    settings = load_settings(_write(tmp_path, CONTRACT_ONLY))
    assert [k.key for k in settings.tagging.keys] == [
        "ml-team", "ml-project", "ml-workload-type", "ml-environment", "ml-experiment-id",
    ]
    experiment = settings.tagging.keys[-1]
    assert experiment.required is False and experiment.required_when == {"ml-workload-type": "training"}
    assert settings.allocation.pools == []


def test_unknown_key_names_the_key_and_file(tmp_path):
    path = _write(tmp_path, CONTRACT_ONLY + "lake_url: s3://typo\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "lake_url" in str(err.value) and str(path) in str(err.value)


def test_nested_unknown_key_names_its_path(tmp_path):
    path = _write(tmp_path, CONTRACT_ONLY.replace("prometheus_url: null", "prometheus_uri: null"))
    with pytest.raises(ConfigError, match=r"usage\.prometheus_uri"):
        load_settings(path)


def test_unknown_format_is_rejected(tmp_path):
    path = _write(tmp_path, CONTRACT_ONLY.replace("format: aws_cur2", "format: azure_ea"))
    with pytest.raises(ConfigError, match=r"billing_sources\.0\.format"):
        load_settings(path)


def test_env_var_selects_the_file(tmp_path, monkeypatch):
    path = _write(tmp_path, CONTRACT_ONLY.replace("./lake\n", "/srv/lake-from-env\n", 1))
    monkeypatch.setenv("COST_PIPELINE_CONFIG", str(path))
    assert load_settings().lake_uri == "/srv/lake-from-env"


def test_rules_version_changes_with_the_rules(tmp_path):
    a = load_settings(_write(tmp_path, CONTRACT_ONLY))
    b = load_settings(_write(tmp_path, CONTRACT_ONLY + "tagging:\n  teams: {fraud-detection: {}}\n"))
    assert a.rules_version != b.rules_version
    assert a.rules_version == load_settings(_write(tmp_path, CONTRACT_ONLY)).rules_version


POOL = """
allocation:
  pools:
    - name: eks
      select: {tags: {%s: ml-shared}}
      driver: {kind: even}
"""


def test_a_pool_may_select_by_a_provider_tag(tmp_path):
    settings = load_settings(_write(tmp_path, CONTRACT_ONLY + POOL % '"aws:eks:cluster-name"'))
    assert settings.allocation.pools[0].select.tags == {"aws:eks:cluster-name": "ml-shared"}


@pytest.mark.parametrize("text, problem", [
    (POOL % "ml-tema", "names 'ml-tema', which is not a key of the tagging schema"),
    ((POOL % "team").replace("select: {tags", "select: {tagz"), "select.tagz"),
])
def test_an_unknown_pool_key_fails_at_load_naming_key_and_file(tmp_path, text, problem):
    path = _write(tmp_path, CONTRACT_ONLY + text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert problem in str(err.value) and str(path) in str(err.value)
