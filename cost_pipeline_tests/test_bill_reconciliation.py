"""The lake against the delivered bill, and range runs that never half-happen."""

import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import sys
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cost_pipeline.config import load_settings
from cost_pipeline.definitions import defs as load_defs
from cost_pipeline.defs.resources import resources_for
from cost_pipeline.sample.cur2 import EXPORT
from cost_pipeline_tests.conftest import DAYS, START, write_config

LAST = START + dt.timedelta(days=DAYS - 1)
TABLES = ["cost_lines", "untagged_spend", "tag_compliance", "allocated_costs", "team_daily_costs"]
Q = Decimal("1e-12")


def _run(config: Path, instance, job="daily_costs_job", first=START, last=LAST):
    tags = {ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()} if job == "daily_costs_job" else {}
    return load_defs().resolve_job_def(job).execute_in_process(
        instance=instance, resources=resources_for(load_settings(config)), tags=tags, raise_on_error=False
    )


def _check(result, name="cost_lines_match_bill"):
    events = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return next(e for e in events if e.check_name == name)


def _digests(lake: Path) -> dict[str, str]:
    return {str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest() for t in TABLES for p in sorted((lake / t).rglob("*")) if p.is_file()}


def _copy_billing(tmp_path: Path, sample_dir: Path) -> Path:
    billing = tmp_path / "aws"
    shutil.copytree(sample_dir / "billing" / "aws", billing)
    return billing


def _day_file(billing: Path, day: dt.date) -> Path:
    return billing / "data" / f"BILLING_PERIOD={day:%Y-%m}" / f"{EXPORT}-{day.day:05d}.snappy.parquet"


def test_bill_totals_equal_the_delivered_files_and_the_check_passes(tmp_path, sample_dir):
    billing = _copy_billing(tmp_path, sample_dir)
    config = write_config(tmp_path, sample_dir, billing_sources=[{"name": "aws-main", "format": "aws_cur2", "uri": str(billing)}])
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance).success
    result = _run(config, instance, "reports_job")
    assert result.success
    check = _check(result)
    assert check.passed, check.description
    totals = pl.read_parquet(tmp_path / "lake" / "bill_totals" / "part-0.parquet")
    raw = pa.concat_tables([pq.read_table(_day_file(billing, START + dt.timedelta(days=i))) for i in range(DAYS)])
    unblended = sum(Decimal(repr(v)).quantize(Q, ROUND_HALF_EVEN) for v in raw["line_item_unblended_cost"].to_pylist())
    assert (totals["lines"].sum(), totals["billed_cost"].sum()) == (raw.num_rows, unblended)
    assert set(totals["billing_period"]) == {f"{START:%Y-%m}"}
    record = instance.fetch_materializations(dg.AssetKey("bill_totals"), limit=1).records[0]
    assert "| aws-main | 2026-09 | USD |" in record.event_log_entry.asset_materialization.metadata["periods"].value.replace("\\-", "-")


def test_the_ingest_records_each_days_totals_and_a_file_changed_since_is_read_again(tmp_path, sample_dir):
    """The ingest keeps each day's totals beside the version of the file it wrote, so the reports' first
    run reads no line for them (after a year's backfill it read 365 M); a file changed since (a line
    dropped by hand) is read again, and the check names its day."""
    from cost_pipeline.lib.billing.totals import held_totals
    from cost_pipeline.lib.lake import Lake
    from cost_pipeline_tests.conftest import cur2_effective

    config = write_config(tmp_path, sample_dir)
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance).success
    recorded = pl.read_parquet(str(tmp_path / "lake" / "cost_line_day_totals" / "*" / "part-0.parquet")).sort("date")
    expected = {}
    for i in range(DAYS):  # by hand from each day's delivered file
        rows = pq.read_table(_day_file(sample_dir / "billing" / "aws", START + dt.timedelta(days=i))).to_pylist()
        expected[START + dt.timedelta(days=i)] = (len(rows), sum((cur2_effective(r).quantize(Q, ROUND_HALF_EVEN) for r in rows), Decimal(0)))
    assert {r["date"]: (r["lines"], r["effective_cost"]) for r in recorded.iter_rows(named=True)} == expected
    assert set(recorded["billing_period"]) == {f"{START:%Y-%m}"} and recorded["version"].null_count() == 0

    # the recorded totals are what the reports use: planted ones (same version) come back, no line read
    lake = Lake.from_uri(str(tmp_path / "lake"))
    lake.write_day("cost_line_day_totals", START, recorded.filter(pl.col("date") == START).with_columns(lines=pl.lit(7, pl.Int64)))
    assert dict(held_totals(lake).select("date", "lines").iter_rows())[START] == 7
    lake.write_day("cost_line_day_totals", START, recorded.filter(pl.col("date") == START))
    shutil.rmtree(tmp_path / "lake" / "cost_line_totals")

    # a line dropped by hand after the ingest: that day's file has another version, its lines are read
    changed = START + dt.timedelta(days=1)
    day_file = tmp_path / "lake" / "cost_lines" / f"date={changed}" / "part-0.parquet"
    lines = pl.read_parquet(day_file)
    dropped = lines.filter(pl.col("effective_cost") > 0).row(0, named=True)
    lines.filter(pl.col("line_item_id") != dropped["line_item_id"]).write_parquet(day_file)
    check = _check(_run(config, instance, "reports_job"))
    assert not check.passed and f"first day off {changed}" in check.description
    assert f"-{dropped['effective_cost']} effective, -1 line(s)" in check.description
    # an unreadable record: the lines are read instead
    last = START + dt.timedelta(days=DAYS - 1)
    (tmp_path / "lake" / "cost_line_day_totals" / f"date={last}" / "part-0.parquet").write_bytes(b"not parquet")
    shutil.rmtree(tmp_path / "lake" / "cost_line_totals")
    assert dict(held_totals(lake).select("date", "lines").iter_rows())[last] == expected[last][0]


def test_bill_totals_of_a_delivery_name_the_file_that_does_not_read(tmp_path, sample_dir):
    """A delivery's files are summed in one plan; when one of them does not read (an amount as text),
    the error names that file, not the delivery."""
    from cost_pipeline.config import BillingSource
    from cost_pipeline.lib.billing.sources import bill_totals
    from cost_pipeline.lib.errors import InputError

    billing = _copy_billing(tmp_path, sample_dir)
    source = BillingSource(name="aws-main", format="aws_cur2", uri=str(billing))
    good = bill_totals(source)
    assert good["lines"].sum() == sum(pq.read_metadata(_day_file(billing, START + dt.timedelta(days=i))).num_rows for i in range(DAYS))
    bad = _day_file(billing, START + dt.timedelta(days=2))
    table = pq.read_table(bad)
    amounts = [None if v is None else str(v) for v in table["line_item_unblended_cost"].to_pylist()]
    amounts[5] = "12,5 EUR"
    pq.write_table(table.set_column(table.schema.get_field_index("line_item_unblended_cost"), "line_item_unblended_cost", pa.array(amounts)), bad)
    with pytest.raises(InputError, match="cannot read billing data") as err:
        bill_totals(source)
    assert bad.name in str(err.value)


def test_a_line_dropped_from_the_lake_fails_the_check_naming_source_period_and_difference(tmp_path, sample_dir):
    config = write_config(tmp_path, sample_dir)
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance).success
    assert _check(_run(config, instance, "reports_job")).passed  # every day's totals now cached in the lake
    assert pl.read_parquet(tmp_path / "lake" / "cost_line_totals" / "part-0.parquet")["date"].n_unique() == DAYS
    day_file = tmp_path / "lake" / "cost_lines" / f"date={START + dt.timedelta(days=1)}" / "part-0.parquet"
    lines = pl.read_parquet(day_file)
    dropped = lines.filter(pl.col("effective_cost") > 0).row(0, named=True)
    lines.filter(pl.col("line_item_id") != dropped["line_item_id"]).write_parquet(day_file)
    result = _run(config, instance, "reports_job")
    check = _check(result)
    assert not check.passed and not result.success
    assert f"aws-main {START:%Y-%m} USD: cost_lines differ from the bill by -{dropped['effective_cost']} effective, -1 line(s)" in check.description
    assert f"first day off {START + dt.timedelta(days=1)}" in check.description


def test_a_bad_second_day_leaves_the_first_day_untouched_and_nothing_temporary_visible(tmp_path, sample_dir):
    billing = _copy_billing(tmp_path, sample_dir)
    config = write_config(tmp_path, sample_dir, billing_sources=[{"name": "aws-main", "format": "aws_cur2", "uri": str(billing)}])
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance, first=START, last=START + dt.timedelta(days=1)).success
    lake = tmp_path / "lake"
    before = _digests(lake)

    # a restatement that changes day 1 and breaks day 2 (a currency that is no ISO 4217 code)
    day1, day2 = _day_file(billing, START), _day_file(billing, START + dt.timedelta(days=1))
    t1 = pq.read_table(day1)
    pq.write_table(t1.set_column(t1.schema.get_field_index("line_item_unblended_cost"), "line_item_unblended_cost",
                                 pc.multiply(t1["line_item_unblended_cost"], 2.0)), day1)
    t2 = pq.read_table(day2)
    currencies = t2["line_item_currency_code"].to_pylist()
    currencies[7] = "ZZZ"
    pq.write_table(t2.set_column(t2.schema.get_field_index("line_item_currency_code"), "line_item_currency_code", pa.array(currencies)), day2)

    result = _run(config, instance, first=START, last=START + dt.timedelta(days=1))
    assert not result.success
    assert _digests(lake) == before  # day 1 not replaced, although it read fine
    visible = pl.scan_parquet(str(lake / "cost_lines" / "date=*" / "*.parquet")).select(pl.len()).collect().item()
    assert visible == sum(pl.read_parquet(lake / "cost_lines" / f"date={START + dt.timedelta(days=i)}" / "part-0.parquet").height for i in range(2))
    assert [p.name for p in lake.glob("cost_lines/date=*/*")] == ["part-0.parquet"] * 2
    assert not list((lake / "_tmp").glob("stage-*"))  # the failed run cleaned up its staging


def test_a_rerun_gives_byte_identical_partitions(tmp_path, sample_dir):
    config = write_config(tmp_path, sample_dir)
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance).success
    first = _digests(tmp_path / "lake")
    assert _run(config, instance).success
    assert _digests(tmp_path / "lake") == first and len(first) == len(TABLES) * DAYS


def test_hostile_usage_labels_never_reach_a_team_or_the_summary(tmp_path, sample_dir):
    """Prometheus labels are untrusted: a hostile team label on the requests extract gets nothing of
    its own, its share goes to ``unknown`` with a reason, and summary.md carries no control character."""
    import json

    usage = tmp_path / "usage"
    shutil.copytree(sample_dir / "usage", usage)
    hostile = "\x1b[31mfraud\x00\u202e```\n# owned"
    for path in usage.glob("date=*/k8s_*.json"):
        body = json.loads(path.read_text())
        for series in body["data"]["result"]:
            if series["metric"].get("namespace") == "fraud-detection-training":
                series["metric"]["label_ml_team"] = hostile
        path.write_text(json.dumps(body))
    config = write_config(tmp_path, sample_dir, usage={"extracts_uri": str(usage), "prometheus_url": None})
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance).success and _run(config, instance, "reports_job").success
    allocated = pl.read_parquet(tmp_path / "lake" / "allocated_costs" / "*" / "*.parquet")
    assert not allocated["team"].str.contains("fraud\x00").any()
    unknown = allocated.filter((pl.col("pool") == "eks-shared") & (pl.col("team") == "unknown"))
    assert unknown.height and set(unknown["reason"]) == {"unknown_team_label"}
    summary = (tmp_path / "lake" / "reports" / "summary.md").read_text()
    assert not any(ch in summary for ch in "\x1b\x00\u202e") and summary.count("```") == 2


def _spanning_legacy_delivery(tmp_path: Path, sample_dir: Path) -> tuple[Path, pa.Table, list[dt.date]]:
    """A legacy CUR September delivery whose lines started in August, September and October."""
    from cost_pipeline.sample.cur_legacy import deliver, write_files

    table = pq.read_table(_day_file(sample_dir / "billing" / "aws", START))
    i = table.schema.get_field_index("line_item_usage_start_date")
    starts = [t - dt.timedelta(days=3) if n % 3 == 0 else t + dt.timedelta(days=31) if n % 3 == 1 else t
              for n, t in enumerate(table["line_item_usage_start_date"].to_pylist())]
    table = table.set_column(i, "line_item_usage_start_date", pa.array(starts, type=table.schema.field(i).type))
    write_files(tmp_path / "legacy", deliver({}, "acme", START, "asm-1", table))
    return tmp_path / "legacy" / "cur" / "acme", table, sorted({t.date() for t in starts})


def test_a_delivery_spanning_three_periods_lands_whole_and_reconciles(tmp_path, sample_dir):
    uri, table, days = _spanning_legacy_delivery(tmp_path, sample_dir)
    config = write_config(tmp_path, sample_dir, partitions_start_date="2026-08-01",
                          billing_sources=[{"name": "legacy", "format": "aws_cur_legacy", "uri": str(uri)}])
    # the CLI, as a user runs it: partitions start where this config says (2026-08-01)
    proc = subprocess.run(
        [sys.executable, "-m", "cost_pipeline.cli", "run", "--config", str(config), "--start", days[0].isoformat(), "--end", days[-1].isoformat()],
        capture_output=True, text=True, env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "legacy           20260901-20261001" in proc.stdout and proc.stdout.count(" ok\n") == 1
    lines = pl.read_parquet(tmp_path / "lake" / "cost_lines" / "*" / "*.parquet")
    unblended = sum(Decimal(repr(v)).quantize(Q, ROUND_HALF_EVEN) for v in table["line_item_unblended_cost"].to_pylist())
    assert (lines.height, lines["billed_cost"].sum()) == (table.num_rows, unblended)
    assert sorted(lines["date"].unique().to_list()) == days and {d.month for d in days} == {8, 9, 10}


def test_lines_before_the_first_partition_fail_the_check(tmp_path, sample_dir):
    uri, table, days = _spanning_legacy_delivery(tmp_path, sample_dir)
    config = write_config(tmp_path, sample_dir, billing_sources=[{"name": "legacy", "format": "aws_cur_legacy", "uri": str(uri)}])
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance, first=START, last=START).success
    check = _check(_run(config, instance, "reports_job"))
    early = sum(1 for t in table["line_item_usage_start_date"].to_pylist() if t.date() < START)
    assert not check.passed
    assert f"legacy 20260901-20261001 USD: {early} line(s) dated before partitions_start_date {START} can never land" in check.description


def test_two_currencies_are_never_added_together(tmp_path, sample_dir):
    """USD from CUR 2.0 and EUR from a FOCUS export: shares, reasons and the bill check per currency."""
    focus = tmp_path / "focus"
    focus.mkdir()
    tags = '"{""ml-team"": ""fraud-detection"", ""ml-project"": ""txn-scoring"", ""ml-workload-type"": ""inference"", ""ml-environment"": ""prod""}"'
    no_project = '"{""ml-team"": ""fraud-detection"", ""ml-workload-type"": ""inference"", ""ml-environment"": ""prod""}"'
    (focus / "eur.csv").write_text(
        "BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,Tags\n"
        f"60.00,60.00,EUR,{START}T00:00:00Z,{START}T01:00:00Z,Usage,{tags}\n"
        f"25.00,25.00,EUR,{START}T01:00:00Z,{START}T02:00:00Z,Usage,{no_project}\n"
        f"15.00,15.00,EUR,{START}T02:00:00Z,{START}T03:00:00Z,Usage,\n"
    )
    config = write_config(tmp_path, sample_dir, billing_sources=[
        {"name": "aws-main", "format": "aws_cur2", "uri": str(sample_dir / "billing" / "aws")},
        {"name": "focus-eur", "format": "focus", "uri": str(focus)},
    ])
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance, first=START, last=START).success
    result = _run(config, instance, "reports_job")
    assert _check(result).passed
    record = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("untagged_spend"), asset_partitions=[START.isoformat()]), limit=1)
    metadata = record.records[0].event_log_entry.asset_materialization.metadata
    assert metadata["untagged % (EUR)"].value == 40.0  # (25 + 15) / 100, by hand
    assert 0 < metadata["untagged % (USD)"].value < 20
    summary = (tmp_path / "lake" / "reports" / "summary.md").read_text()
    assert "Untagged (quarantined) share of EUR spend: 40.00%" in summary
    assert "missing:ml-project                  25.00 EUR" in summary and "missing:ml-team                     15.00 EUR" in summary
    assert re.search(r"focus-eur\s+bill\s+100\.00\s+lake\s+100\.00 EUR  ok", summary)


def test_sources_without_delivered_files_are_left_out_of_the_bill_check():
    """A bq:// source has lake lines but no bill_totals (its table is read by day): the check compares
    only the sources it has bill totals for, instead of calling every BigQuery line 'off'."""
    from cost_pipeline.lib.billing.totals import reconcile_to_bill

    day = START
    row = {"date": day, "currency": "USD", "lines": 2, "billed_cost": Decimal("3"), "effective_cost": Decimal("3")}
    money = {"billed_cost": pl.Decimal(38, 12), "effective_cost": pl.Decimal(38, 12)}
    bill = pl.DataFrame([{"source": "aws-main", "billing_period": "2026-09", **row}], schema_overrides=money)
    lake = pl.DataFrame([{"source": "aws-main", "billing_period": "2026-09", **row},
                         {"source": "gcp-bq", "billing_period": "202609", **row}], schema_overrides=money)
    table = reconcile_to_bill(bill, lake, {day}, START, sources=["aws-main"])
    assert table.select("source", "status").rows() == [("aws-main", "ok")]
    off = reconcile_to_bill(bill, lake.with_columns(pl.col("lines") * 2), {day}, START, sources=["aws-main"])
    assert off["status"].to_list() == ["off"]


def test_held_totals_read_a_day_again_whenever_its_file_changed(tmp_path):
    """The lake's side of the reconciliation is cached per day with the version of the day's file."""
    from cost_pipeline.lib.billing.totals import held_totals
    from cost_pipeline.lib.lake import Lake
    from cost_pipeline.lib.money import MONEY

    lake = Lake.from_uri(str(tmp_path / "lake"))

    def day_lines(day: dt.date, cents: list[int]) -> pl.DataFrame:
        return pl.DataFrame({"source": "aws-main", "billing_period": f"{day:%Y-%m}", "date": day, "currency": "USD",
                             "billed_cost": [Decimal(c) / 100 for c in cents], "effective_cost": [Decimal(c) / 100 for c in cents],
                             "is_final": False}).with_columns(pl.col("billed_cost", "effective_cost").cast(MONEY))

    days = [START, START + dt.timedelta(days=1), START + dt.timedelta(days=2)]
    lake.write_day("cost_lines", days[0], day_lines(days[0], [101, 202]))
    lake.write_day("cost_lines", days[1], day_lines(days[1], [5]))
    lake.write_day("cost_lines", days[2], day_lines(days[2], []))  # a day without lines

    def totals() -> dict:
        return {r["date"]: (r["lines"], r["effective_cost"]) for r in held_totals(lake).iter_rows(named=True)}

    assert totals() == {days[0]: (2, Decimal("3.03")), days[1]: (1, Decimal("0.05"))}
    cache = pl.read_parquet(tmp_path / "lake" / "cost_line_totals" / "part-0.parquet")
    assert sorted(cache["date"].to_list()) == days and cache.filter(pl.col("source").is_null())["date"].to_list() == [days[2]]
    # unchanged files are not read again: totals planted in the cache for the same version are what comes back
    lake.write_table("cost_line_totals", cache.with_columns(lines=pl.when(pl.col("date") == days[1]).then(7).otherwise(pl.col("lines"))))
    assert totals()[days[1]] == (7, Decimal("0.05"))
    # a day replaced (a re-run, a restatement, a file edited by hand) is read again
    lake.write_day("cost_lines", days[1], day_lines(days[1], [5, 6, 7]))
    assert totals() == {days[0]: (2, Decimal("3.03")), days[1]: (3, Decimal("0.18"))}
    # a day removed from the lake leaves the totals; an unreadable cache is rebuilt from the files
    (tmp_path / "lake" / "cost_lines" / f"date={days[0]}" / "part-0.parquet").unlink()
    (tmp_path / "lake" / "cost_line_totals" / "part-0.parquet").write_bytes(b"not parquet")
    assert totals() == {days[1]: (3, Decimal("0.18"))}
    assert sorted(pl.read_parquet(tmp_path / "lake" / "cost_line_totals" / "part-0.parquet")["date"].to_list()) == days[1:]


def test_cost_lines_sums_each_file_for_the_bill_and_the_reports_read_only_files_changed_since(tmp_path, sample_dir):
    """cost_lines sums each billing file it reads the way bill_totals does, by the file's version, so
    the reports' first run after a backfill reads no billing file again; a file whose version changed
    since is read again (here a damaged one, whose error names it)."""
    billing = _copy_billing(tmp_path, sample_dir)
    config = write_config(tmp_path, sample_dir, billing_sources=[{"name": "aws-main", "format": "aws_cur2", "uri": str(billing)}])
    instance = dg.DagsterInstance.ephemeral()
    assert _run(config, instance).success
    summed = pl.read_parquet(tmp_path / "lake" / "bill_file_totals" / "part-0.parquet")
    expected = {}
    for i in range(DAYS):  # by hand from each delivered file: its lines and unblended (billed) cost
        path = _day_file(billing, START + dt.timedelta(days=i))
        raw = pq.read_table(path)
        expected[str(path)] = (raw.num_rows, sum(Decimal(repr(v)).quantize(Q, ROUND_HALF_EVEN) for v in raw["line_item_unblended_cost"].to_pylist()))
    got = summed.group_by("uri").agg(pl.col("lines").sum(), pl.col("billed_cost").sum())
    assert {u: (n, b) for u, n, b in got.iter_rows()} == expected

    # the same version (size and modification time) with other bytes: the reports do not read it
    damaged = _day_file(billing, START + dt.timedelta(days=1))
    before = damaged.stat()
    damaged.write_bytes(b"\0" * before.st_size)
    os.utime(damaged, ns=(before.st_atime_ns, before.st_mtime_ns))
    reports = _run(config, instance, "reports_job")
    assert reports.success and _check(reports).passed
    metadata = instance.fetch_materializations(dg.AssetKey("bill_totals"), limit=1).records[0].event_log_entry.asset_materialization.metadata
    assert (metadata["files_read"].value, metadata["files_summed_by_cost_lines"].value) == (0, DAYS)

    # touched: a new version, read again
    os.utime(damaged)
    again = _run(config, instance, "reports_job")
    assert not again.success
    failure = next(e for e in again.all_events if e.event_type_value == "STEP_FAILURE")
    assert str(damaged) in failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
