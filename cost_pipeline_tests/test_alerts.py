"""Anomalies, forecasts and Slack: detection on hand-made series, quality on the generated sample,
and delivery through slack-sdk against a local stand-in for the Slack Web API."""

import datetime as dt
import json
import re
import shutil
from decimal import Decimal

import polars as pl
import pytest

from cost_pipeline.config import load_settings
from cost_pipeline.lib.anomalies import Thresholds, daily_sums, detect
from cost_pipeline.lib.forecast import forecast_month
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.slack.delivery import ApiSender, deliver, read_ledger, web_client
from cost_pipeline.lib.slack.messages import MAX_BLOCKS, MAX_SECTION, Digest, anomaly_alert, team_digest
from cost_pipeline.lib.slack.plan import alerts, digests
from cost_pipeline_tests.conftest import START as SAMPLE_START
from cost_pipeline_tests.conftest import cli
from cost_pipeline_tests.slack_standin import SlackStandIn

START = dt.date(2026, 9, 1)
TEAMS = ["fraud-detection", "personalization", "search-ranking", "forecasting", "platform"]


def detail_rows(series: dict[tuple[str, str], list[float]], rules: dict[int, str] | None = None) -> pl.DataFrame:
    """team_cost_detail rows from daily amounts per (team, project)."""
    rows = []
    for (team, project), amounts in series.items():
        for i, amount in enumerate(amounts):
            if amount:
                rows.append({"date": START + dt.timedelta(days=i), "team": team, "project": project, "workload_type": "training",
                             "environment": "prod", "experiment_id": None, "service": "AmazonEC2", "allocation": "direct", "pool": None, "reason": None,
                             "currency": "USD", "rules_version": (rules or {}).get(i, "r1"), "amount": Decimal(str(amount))})
    return pl.DataFrame(rows, schema_overrides={"amount": pl.Decimal(38, 12), "experiment_id": pl.String, "pool": pl.String, "reason": pl.String})


def flat(days: int, level: float = 1000.0) -> list[float]:
    return [level + (37 * i % 11) * 10 for i in range(days)]  # 1000..1100, a fixed wiggle


def test_a_spike_is_flagged_with_exact_observed_and_expected():
    amounts = flat(40)
    amounts[35] = 4000.0
    a = detect(detail_rows({("ml", "p1"): amounts}), START + dt.timedelta(days=35), default=Thresholds())
    assert a.height == 1
    row = a.row(0, named=True)
    assert (row["kind"], row["scope"], row["episode_start"]) == ("spike", "team", START + dt.timedelta(days=35))
    assert row["observed"] == Decimal("4000")
    # same weekday of the four weeks before: days 28, 21, 14, 7 -> median by hand
    weekdays = sorted(Decimal(str(amounts[i])) for i in (28, 21, 14, 7))
    assert row["expected"] == (weekdays[1] + weekdays[2]) / 2
    assert json.loads(row["drivers"])[0]["value"] == "p1"


def test_small_moves_are_not_flagged_and_both_thresholds_must_pass():
    amounts = flat(40)
    amounts[35] = 1400.0  # +35 %: under the relative threshold
    assert detect(detail_rows({("ml", "p1"): amounts}), START + dt.timedelta(days=35)).is_empty()
    small = [a / 100 for a in flat(40)]
    small[35] = 40.0  # 4x, but 30 currency units: under the absolute threshold
    assert detect(detail_rows({("ml", "p1"): small}), START + dt.timedelta(days=35)).is_empty()


def test_a_level_shift_is_one_anomaly_across_its_days():
    amounts = flat(28) + [a * 1.9 for a in flat(12)]
    details = detail_rows({("ml", "p1"): amounts})
    found = pl.concat([detect(details, START + dt.timedelta(days=i)) for i in range(28, 40)])
    assert found["anomaly_id"].n_unique() == 1
    assert set(found["episode_start"]) == {START + dt.timedelta(days=28)}
    assert "level_shift" in set(found["kind"])


def test_new_spend_from_zero_and_folding_into_the_team_anomaly():
    details = detail_rows({("ml", "p1"): flat(40), ("ml", "new"): [0.0] * 35 + [300.0] * 5})  # +30 % for the team: under its threshold
    day = START + dt.timedelta(days=35)
    found = detect(details, day)
    assert found.select("scope", "scope_value", "kind").rows() == [("project", "new", "new_spend")]
    assert found["observed"][0] == Decimal("300") and found["expected"][0] == 0
    spike = detail_rows({("ml", "p1"): flat(35) + [5000.0] + flat(4), ("ml", "p2"): flat(40)})
    both = detect(spike, day)
    assert both.select("scope").to_series().to_list() == ["team"]  # p1's own anomaly is a driver of the team's


def test_sums_of_a_whole_window_give_each_days_own_anomalies():
    """A backfill sums a window of days once (daily_sums) and detects each day on its own 35 days: the
    same anomalies as each day alone, which the spike, shift, new spend and rules change here give."""
    amounts = flat(28) + [a * 1.9 for a in flat(12)] + flat(20)
    amounts[50] = 9000.0
    details = detail_rows({("ml", "p1"): amounts, ("ml", "new"): [0.0] * 45 + [400.0] * 15, ("ops", "p2"): flat(60)}, rules={52: "r2"})
    sums = daily_sums(details)
    found = 0
    for i in range(20, 60):
        day = START + dt.timedelta(days=i)
        history = details.filter(pl.col("date").is_between(day - dt.timedelta(days=35), day))
        alone = detect(history, day)
        assert detect(history, day, sums=sums).equals(alone), day
        found += alone.height
    assert found >= 10


def test_a_rules_change_is_kept_but_suppressed():
    amounts = flat(40)
    amounts[35] = 4000.0
    found = detect(detail_rows({("ml", "p1"): amounts}, rules={35: "r2"}), START + dt.timedelta(days=35))
    assert found["suppressed"][0] == "rules version changed (r1 -> r2)"


def test_forecast_of_a_weekly_pattern_is_exact():
    weekly = [100, 100, 100, 100, 100, 20, 20]  # weekdays and weekends
    values = {dt.date(2026, 8, 3) + dt.timedelta(days=i): Decimal(weekly[i % 7]) for i in range(8 * 7)}  # Mon 2026-08-03 ..
    as_of = dt.date(2026, 9, 15)
    september = [dt.date(2026, 9, d) for d in range(1, 31)]
    expected = sum(Decimal(weekly[(d - dt.date(2026, 8, 3)).days % 7]) for d in september)
    assert forecast_month(values, as_of) == expected


def test_quality_on_the_sample_meets_its_floors(october):
    out = cli("evaluate", "--config", str(october / "config.yaml"), "--truth", str(october / "data" / "ground_truth" / "anomalies.csv"))
    assert out.returncode == 0, out.stderr
    f1 = float(re.search(r"F1 ([0-9.]+)", out.stdout).group(1))
    worst = int(re.search(r"at most (\d+) in one", out.stdout).group(1))
    mape = float(re.search(r"MAPE ([0-9.]+)%", out.stdout).group(1))
    # floors: the sample injects 3 spikes, a level shift and new spend over 2 months of 5 teams
    assert f1 >= 0.8 and worst <= 1 and mape <= 15.0, out.stdout


def test_a_backfill_of_past_days_sends_nothing(october):
    assert not list((october / "lake" / "_outbox").rglob("*.json"))
    assert Lake.from_uri(str(october / "lake")).read_table("slack_ledger") is None


def test_notify_writes_each_message_once_to_the_outbox(config_path, tmp_path):
    last_day = SAMPLE_START + dt.timedelta(days=3)
    args = ("run", "--config", str(config_path), "--notify", "--start", SAMPLE_START.isoformat(), "--end", last_day.isoformat())
    outbox = tmp_path / "lake" / "_outbox" / "messages"
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    files = {p.name: p.read_bytes() for p in outbox.iterdir()}
    digests_written = sorted(n for n in files if "team_digest" in n and n.endswith(".json"))
    assert digests_written == [f"{last_day}-team_digest-{t}.json" for t in sorted(TEAMS)]  # the range's last day only
    assert all(n.replace(".json", ".png") in files for n in digests_written)
    payload = json.loads(files[f"{last_day}-team_digest-fraud-detection.json"])
    assert payload["channel"] == "#ml-fraud-costs" and len(payload["blocks"]) <= MAX_BLOCKS
    assert cli(*args).returncode == 0
    assert {p.name: p.read_bytes() for p in outbox.iterdir()} == files
    ledger = read_ledger(Lake.from_uri(str(tmp_path / "lake")))
    assert ledger.height == len([n for n in files if n.endswith(".json")]) and set(ledger["state"]) == {"sent"}


def _day_messages(october, day):
    settings = load_settings(october / "config.yaml")
    lake = Lake.from_uri(str(october / "lake"))
    detail = lake.scan("team_cost_detail").filter(pl.col("date") <= day).collect()
    found = lake.scan("anomalies").filter(pl.col("date") == day).collect()
    untagged = lake.scan("untagged_spend").select("date", "account_id", "amount", "currency").collect()
    return alerts(day, found, detail, settings) + digests(day, detail, found, untagged, settings)


def test_each_team_digest_holds_only_its_own_numbers(october):
    day = dt.date(2026, 10, 14)
    allocated = pl.scan_parquet(october / "lake" / "allocated_costs" / "date=*" / "*.parquet").filter(pl.col("date") == day).collect()
    totals = {t: f"{a.quantize(Decimal('0.01')):,.2f}" for t, a in allocated.group_by("team").agg(pl.col("amount").sum()).iter_rows()}
    team_digests = {m.team: json.dumps(m.payload()) for m in _day_messages(october, day) if m.kind == "team_digest"}
    assert sorted(team_digests) == sorted(TEAMS)
    for team, text in team_digests.items():
        assert f"*Yesterday* {totals[team]} USD" in text  # its own day total, summed here from allocated_costs
        for other in set(TEAMS) - {team}:
            assert other not in text and f"{totals[other]} USD" not in text, (team, other)


def test_slack_sdk_delivery_retries_429_and_500_and_never_sends_twice(october, tmp_path):
    day = dt.date(2026, 10, 14)  # a spike of search-ranking: alerts and digests
    messages = _day_messages(october, day)
    charts = [m for m in messages if m.chart is not None]
    lake = Lake.from_uri(str(tmp_path / "lake"))
    with SlackStandIn() as slack:
        slack.script["chat.postMessage"] = [(429, {"Retry-After": "1"}), (500, {})]
        outcome = deliver(lake, messages, ApiSender(web_client("xoxb-test", slack.url, retries=2)))
        assert outcome.failed == [] and len(outcome.sent) == len(messages)
        posts = slack.calls("chat.postMessage")
        assert len(posts) == len(messages) + 2  # the 429 and the 500 were retried
        assert {p["auth"] for p in posts} == {"Bearer xoxb-test"}
        assert sorted(p["params"]["channel"] for p in posts[2:]) == sorted(m.channel for m in messages)
        assert len(slack.calls("files.getUploadURLExternal")) == len(slack.calls("upload")) == len(slack.calls("files.completeUploadExternal")) == len(charts)
        assert all(c["params"].get("thread_ts") for c in slack.calls("files.completeUploadExternal"))
        before = len(slack.requests)
        rerun = deliver(lake, messages, ApiSender(web_client("xoxb-test", slack.url, retries=2)))
        assert len(slack.requests) == before and rerun.sent == [] and len(rerun.skipped) == len(messages)


def test_a_message_that_keeps_failing_stays_pending_and_goes_out_next_time(october, tmp_path):
    messages = _day_messages(october, dt.date(2026, 10, 14))
    lake = Lake.from_uri(str(tmp_path / "lake"))
    with SlackStandIn() as slack:
        slack.broken_channels = {"#ml-fraud-costs"}
        outcome = deliver(lake, messages, ApiSender(web_client("xoxb-test", slack.url, retries=1)))
        broken = [m.key for m in messages if m.channel == "#ml-fraud-costs"]
        assert [k for k, _ in outcome.failed] == broken and len(outcome.sent) == len(messages) - len(broken)
        ledger = read_ledger(lake)
        assert set(ledger.filter(pl.col("channel") == "#ml-fraud-costs")["state"]) == {"pending"}
        slack.broken_channels = set()
        before = len(slack.calls("chat.postMessage"))
        again = deliver(lake, messages, ApiSender(web_client("xoxb-test", slack.url, retries=1)))
        assert again.sent == broken and len(slack.calls("chat.postMessage")) == before + len(broken)


def test_hostile_values_ping_nobody_and_messages_stay_within_limits():
    a = {"anomaly_id": "x1", "team": "ml", "scope": "project", "scope_value": "<!channel> & <@U123>", "kind": "spike",
         "episode_start": START, "date": START, "currency": "USD", "observed": Decimal("10"), "expected": Decimal("1"),
         "impact": Decimal("9"), "impact_pct": 9.0, "score": 9.0, "severity": "high",
         "drivers": json.dumps([{"dimension": "project", "value": "<!here>", "delta": 9.0, "share": 1.0}])}
    text = json.dumps(anomaly_alert(a, "ml", "#c").payload())
    assert "<!channel>" not in text and "<!here>" not in text and "&lt;!channel&gt; &amp; &lt;@U123&gt;" in text
    many = Digest("ml", START, "USD", Decimal(1), [(f"p{i}", Decimal(1)) for i in range(500)], Decimal(1), Decimal(0), Decimal(1), None,
                  [], Decimal(1), [a] * 80, Decimal(0), None)
    blocks = team_digest(many, "#c").blocks
    assert len(blocks) <= MAX_BLOCKS
    assert all(len(b["text"]["text"]) <= MAX_SECTION for b in blocks if b["type"] == "section")


@pytest.mark.parametrize("bad", ["not-a-month"])
def test_evaluate_without_truth_is_a_clear_error(october, bad):
    out = cli("evaluate", "--config", str(october / "config.yaml"), "--truth", str(october / bad))
    assert out.returncode == 2 and "no ground truth" in out.stderr


def test_the_pipeline_posts_through_slack_sdk_once_per_message(config_path, tmp_path, monkeypatch):
    """The daily job against the stand-in (dry_run false): the same partition twice posts nothing twice."""
    import yaml

    day = SAMPLE_START + dt.timedelta(days=3)
    with SlackStandIn() as slack:
        raw = yaml.safe_load(config_path.read_text())
        raw["slack"] = {"dry_run": False, "base_url": slack.url, "token_env": "TEST_SLACK_TOKEN"}
        config_path.write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("TEST_SLACK_TOKEN", "xoxb-pipeline")
        args = ("run", "--config", str(config_path), "--notify", "--start", SAMPLE_START.isoformat(), "--end", day.isoformat())
        first = cli(*args)
        assert first.returncode == 0, first.stderr[-2000:]
        channels = sorted(p["params"]["channel"] for p in slack.calls("chat.postMessage"))
        assert sorted(set(channels)) == sorted({"#ml-platform-costs", "#ml-fraud-costs", "#ml-personalization-costs", "#ml-search-costs",
                                                 "#ml-forecasting-costs"})
        ledger = read_ledger(Lake.from_uri(str(tmp_path / "lake")))
        assert len(channels) == ledger.height and set(ledger["state"]) == {"sent"}
        assert len(slack.calls("upload")) == len(TEAMS)  # one chart per team digest
        assert {p["auth"] for p in slack.calls("chat.postMessage")} == {"Bearer xoxb-pipeline"}
        count = len(slack.requests)
        assert cli(*args).returncode == 0
        assert len(slack.requests) == count
    monkeypatch.delenv("TEST_SLACK_TOKEN")
    missing = cli(*args)
    assert missing.returncode == 1 and "$TEST_SLACK_TOKEN is not set" in missing.stderr


def test_a_restatement_of_a_past_day_is_detected_but_not_alerted(october, tmp_path):
    import dagster as dg

    from cost_pipeline.definitions import build_defs
    from cost_pipeline.defs.resources import resources_for

    shutil.copytree(october, tmp_path, dirs_exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace(str(october), str(tmp_path)))
    day = "2026-10-14"  # the search-ranking spike
    before = pl.read_parquet(tmp_path / "lake" / "anomalies" / f"date={day}" / "*.parquet")
    assert before.height and before["suppressed"].is_null().all()
    job = build_defs(load_settings(config)).resolve_job_def("daily_costs_job")
    result = job.execute_in_process(partition_key=day, tags={"cost_pipeline/source": "aws-main", "cost_pipeline/fingerprint": "restated"},
                                    resources=resources_for(load_settings(config)), instance=dg.DagsterInstance.ephemeral())
    assert result.success
    after = pl.read_parquet(tmp_path / "lake" / "anomalies" / f"date={day}" / "*.parquet")
    assert after["anomaly_id"].to_list() == before["anomaly_id"].to_list()
    assert set(after["suppressed"]) == {f"restatement of {day} delivered later"}


def test_a_service_can_spike_while_its_team_and_project_stay_within_bounds():
    ec2 = detail_rows({("ml", "p1"): flat(40)})
    s3 = detail_rows({("ml", "p1"): [300.0 + (i % 3) for i in range(35)] + [700.0] * 5}).with_columns(service=pl.lit("AmazonS3"))
    found = detect(pl.concat([ec2, s3]), START + dt.timedelta(days=35))
    assert found.select("scope", "scope_value", "kind").rows() == [("service", "AmazonS3", "spike")]
    assert found["observed"][0] == Decimal("700")  # the team rose 36 % and the project too: under min_ratio


def test_a_ranged_run_finds_what_a_run_of_each_day_alone_finds(october, tmp_path):
    """The 62-day run read team_cost_detail a window at a time (memory bounded however long the
    backfill); each day must still be detected on exactly the history a run of that day reads."""
    import dagster as dg

    from cost_pipeline.definitions import build_defs

    shutil.copytree(october, tmp_path, dirs_exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace(str(october), str(tmp_path)))
    settings = load_settings(config)
    job = build_defs(settings).resolve_job_def("daily_costs_job")
    ranged = {}
    for day in ("2026-09-29", "2026-10-14", "2026-11-01"):  # first day of the second window, the search-ranking spike, the last day
        ranged[day] = pl.read_parquet(october / "lake" / "anomalies" / f"date={day}" / "*.parquet")
        result = job.execute_in_process(partition_key=day, asset_selection=[dg.AssetKey("anomalies")], instance=dg.DagsterInstance.ephemeral())
        assert result.success
        assert pl.read_parquet(tmp_path / "lake" / "anomalies" / f"date={day}" / "*.parquet").equals(ranged[day]), day
    assert ranged["2026-10-14"].filter(pl.col("team") == "search-ranking").height > 0  # the days compared hold anomalies
