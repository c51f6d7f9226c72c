"""Deliveries built the way each provider builds them: which files are current, and every line once."""

import datetime as dt
import json
import shutil
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cost_pipeline.lib.billing.cur2 import single_day
from cost_pipeline.lib.billing.sources import bill_totals, refuse_repeated_keys
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.storage import Storage
from cost_pipeline.sample.cur2 import EXPORT
from cost_pipeline.sample.cur_legacy import deliver, write_files
from cost_pipeline_tests.conftest import DAYS, START, read_day, source

Q = Decimal("1e-12")
PERIOD = f"{START:%Y-%m}"


def _day_file(sample_dir: Path, day: dt.date) -> Path:
    return sample_dir / "billing" / "aws" / "data" / f"BILLING_PERIOD={day:%Y-%m}" / f"{EXPORT}-{day.day:05d}.snappy.parquet"


def _money(values) -> Decimal:
    return sum((Decimal(repr(v)).quantize(Q, ROUND_HALF_EVEN) for v in values if v is not None), Decimal(0))


def _manifest(root: Path, period: str, names: list[str], execution: str | None = None) -> Path:
    """A Data Exports manifest naming data files by their full S3 URI, as AWS writes it."""
    folder = f"BILLING_PERIOD={period}" + (f"/{execution}" if execution else "")
    body = {"executionId": execution or "overwrite", "dataFiles": [f"s3://billing/cur2/{EXPORT}/data/{folder}/{n}" for n in names]}
    path = root / "metadata" / folder / f"{EXPORT}-Manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return path


def _scaled(table: pa.Table, factor: float) -> pa.Table:
    i = table.schema.get_field_index("line_item_unblended_cost")
    return table.set_column(i, "line_item_unblended_cost", pc.round(pc.multiply(table["line_item_unblended_cost"], factor), 6))


def test_create_new_mode_the_newest_manifest_wins(tmp_path, sample_dir):
    """Two executions of one period, each in its own folder with its own manifest: only the newer is read."""
    day = START + dt.timedelta(days=1)
    original = pq.read_table(_day_file(sample_dir, day))
    restated = _scaled(original, 1.5)
    for execution, table in (("exec-0001", original), ("exec-0002", restated)):
        folder = tmp_path / "data" / f"BILLING_PERIOD={PERIOD}" / execution
        folder.mkdir(parents=True)
        pq.write_table(table, folder / f"{EXPORT}-00001.snappy.parquet")
        _manifest(tmp_path, PERIOD, [f"{EXPORT}-00001.snappy.parquet"], execution)
    lines = read_day("aws_cur2", tmp_path, day)
    assert lines.height == restated.num_rows
    assert lines["billed_cost"].sum() == _money(restated["line_item_unblended_cost"].to_pylist())
    assert set(lines["source_file"]) == {f"data/BILLING_PERIOD={PERIOD}/exec-0002/{EXPORT}-00001.snappy.parquet"}


def test_only_the_files_the_manifest_names_are_read(tmp_path, sample_dir):
    """AWS writes the manifest last: a second file set half uploaded next to it is not part of the delivery."""
    day = START
    table = pq.read_table(_day_file(sample_dir, day))
    folder = tmp_path / "data" / f"BILLING_PERIOD={PERIOD}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / f"{EXPORT}-00001.snappy.parquet")
    _manifest(tmp_path, PERIOD, [f"{EXPORT}-00001.snappy.parquet"])
    pq.write_table(table.slice(0, 100), folder / f"{EXPORT}-00002.snappy.parquet")  # the next refresh, half written
    lines = read_day("aws_cur2", tmp_path, day)
    assert lines.height == table.num_rows
    assert lines["billed_cost"].sum() == _money(table["line_item_unblended_cost"].to_pylist())


def test_two_executions_without_manifests_are_refused(tmp_path, sample_dir):
    table = pq.read_table(_day_file(sample_dir, START))
    for execution in ("exec-1", "exec-2"):
        folder = tmp_path / "data" / f"BILLING_PERIOD={PERIOD}" / execution
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part.parquet")
    with pytest.raises(InputError, match="2 deliveries of BILLING_PERIOD=.*no manifest"):
        read_day("aws_cur2", tmp_path, START)


def test_the_same_file_delivered_twice_is_an_error_naming_both(tmp_path, sample_dir):
    folder = tmp_path / "data" / f"BILLING_PERIOD={PERIOD}"
    folder.mkdir(parents=True)
    shutil.copy(_day_file(sample_dir, START), folder / "a.parquet")
    shutil.copy(_day_file(sample_dir, START), folder / "b.parquet")
    with pytest.raises(InputError, match=r"delivered more than once.* in data/BILLING_PERIOD=\S+/a\.parquet and data/BILLING_PERIOD=\S+/b\.parquet"):
        read_day("aws_cur2", tmp_path, START)


def test_lines_repeated_in_a_second_file_are_an_error(tmp_path, sample_dir):
    table = pq.read_table(_day_file(sample_dir, START))
    folder = tmp_path / "data" / f"BILLING_PERIOD={PERIOD}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-1.parquet")
    pq.write_table(table.slice(200, 50), folder / "part-2.parquet")
    with pytest.raises(InputError, match=r"50 line\(s\) delivered more than once"):
        read_day("aws_cur2", tmp_path, START)


def test_a_cur2_line_without_usage_start_names_file_and_record(tmp_path, sample_dir):
    table = pq.read_table(_day_file(sample_dir, START))
    i = table.schema.get_field_index("line_item_usage_start_date")
    starts = table["line_item_usage_start_date"].to_pylist()
    starts[41] = None
    table = table.set_column(i, "line_item_usage_start_date", pa.array(starts, type=table.schema.field(i).type))
    folder = tmp_path / "data" / f"BILLING_PERIOD={PERIOD}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-1.parquet")
    with pytest.raises(InputError, match=r"part-1\.parquet: record 42: the line has no usage start date"):
        read_day("aws_cur2", tmp_path, START)


def test_legacy_and_focus_lines_without_usage_start_name_file_and_row(tmp_path):
    legacy = tmp_path / "legacy" / "cur.csv"
    legacy.parent.mkdir()
    header = "identity/LineItemId,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/UsageEndDate,lineItem/ProductCode,lineItem/CurrencyCode,lineItem/UnblendedCost,lineItem/UsageAccountId"
    legacy.write_text(header + "\nx1,Usage,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,AmazonEC2,USD,1.25,111\nx2,Usage,,2026-09-01T01:00:00Z,AmazonEC2,USD,2,111\n")
    with pytest.raises(InputError, match=r"cur\.csv: row 3: column line_item_usage_start_date is empty"):
        read_day("aws_cur_legacy", legacy.parent, START)
    focus = tmp_path / "focus" / "f.csv"
    focus.parent.mkdir()
    focus.write_text("BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ChargeCategory\n"
                     "1,1,USD,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,Usage\n1,1,USD,,2026-09-01T01:00:00Z,Usage\n")
    with pytest.raises(InputError, match=r"f\.csv: row 3: column charge_period_start is empty"):
        read_day("focus", focus.parent, START)


def test_legacy_cur_lines_spanning_three_periods_land_on_their_usage_days(tmp_path, sample_dir):
    """The September delivery holds August and October usage too (credits, late charges): each line
    lands on its own day, and bill_totals equals the delivered file's totals."""
    table = pq.read_table(_day_file(sample_dir, START))
    starts = table["line_item_usage_start_date"].to_pylist()
    shifted = [t - dt.timedelta(days=12) if i % 3 == 0 else t + dt.timedelta(days=31) if i % 3 == 1 else t for i, t in enumerate(starts)]
    i = table.schema.get_field_index("line_item_usage_start_date")
    table = table.set_column(i, "line_item_usage_start_date", pa.array(shifted, type=table.schema.field(i).type))
    write_files(tmp_path, deliver({}, "acme", START.replace(day=1), "asm-1", table))
    uri = tmp_path / "cur" / "acme"
    days = sorted({t.date() for t in shifted})
    assert {d.month for d in days} == {8, 9, 10}
    read = [read_day("aws_cur_legacy", uri, d) for d in days]
    assert sum(f.height for f in read) == table.num_rows
    assert all(set(f["date"]) == {d} for f, d in zip(read, days))
    assert {p for f in read for p in f["billing_period"]} == {f"{START:%Y%m%d}-20261001"}
    totals = bill_totals(source("aws_cur_legacy", uri))
    assert totals["lines"].sum() == table.num_rows
    assert totals["billed_cost"].sum() == _money(table["line_item_unblended_cost"].to_pylist())
    assert sorted(totals["date"].to_list()) == days


def test_azure_style_export_with_two_runs_counts_the_newest_run_once(tmp_path):
    """Azure exports write <period>/<runId>/ files plus a manifest.json per run; an older run stays on disk."""
    header = "BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ResourceId\n"
    runs = {"run-a": ["1.00", "2.00"], "run-b": ["1.10", "2.20", "3.30"]}
    for i, (run, costs) in enumerate(runs.items()):
        folder = tmp_path / "exports" / "focus-daily" / "20260901-20260930" / run
        folder.mkdir(parents=True)
        rows = "".join(f"{c},{c},USD,2026-09-01T0{n}:00:00Z,2026-09-01T0{n + 1}:00:00Z,Usage,vm-{n}\n" for n, c in enumerate(costs))
        (folder / "part_0_0001.csv").write_text(header + rows)
        manifest = {"runInfo": {"runId": run, "submittedTime": f"2026-09-0{2 + i}T06:00:00Z"},
                    "blobs": [{"blobName": f"exports/focus-daily/20260901-20260930/{run}/part_0_0001.csv", "byteCount": 1}]}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    lines = read_day("focus", tmp_path / "exports", START)
    assert lines.height == 3 and lines["effective_cost"].sum() == Decimal("6.60")
    assert set(lines["billing_period"]) == {"20260901-20260930"}


def test_without_manifests_the_newest_run_folder_of_a_period_wins(tmp_path):
    header = "BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ChargeCategory\n"
    for run, cost in (("2026-09-02T0600", "5"), ("2026-09-03T0600", "7")):
        folder = tmp_path / "202609" / run
        folder.mkdir(parents=True)
        (folder / "focus.csv").write_text(header + f"{cost},{cost},USD,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,Usage\n")
    newest = tmp_path / "202609" / "2026-09-03T0600" / "focus.csv"
    import os
    os.utime(newest, (newest.stat().st_mtime + 60, newest.stat().st_mtime + 60))
    lines = read_day("focus", tmp_path, START)
    assert lines["effective_cost"].to_list() == [Decimal("7")]


def test_focus_lines_repeated_in_a_second_file_are_refused(tmp_path):
    header = "BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ResourceId\n"
    rows = [f"{n}.5,{n}.5,USD,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,Usage,r-{n}\n" for n in range(60)]
    (tmp_path / "a.csv").write_text(header + "".join(rows))
    (tmp_path / "b.csv").write_text(header + "".join(rows[:50]))
    with pytest.raises(InputError, match=r"50 line\(s\) delivered more than once.* in a\.csv and b\.csv"):
        read_day("focus", tmp_path, START)


def test_identical_rows_within_one_file_are_two_lines(tmp_path):
    """Two identical charges in one file are two charges (ids differ by occurrence), counted once each."""
    header = "BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ChargeCategory\n"
    row = "2.5,2.5,USD,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,Usage\n"
    (tmp_path / "a.csv").write_text(header + row + row)
    lines = read_day("focus", tmp_path, START)
    assert lines.height == 2 and lines["line_item_id"].n_unique() == 2 and lines["effective_cost"].sum() == Decimal("5")
    again = read_day("focus", tmp_path, START)
    assert again["line_item_id"].to_list() == lines["line_item_id"].to_list()  # stable across reads


def test_sample_data_has_a_manifest_per_period(sample_dir):
    manifests = sorted((sample_dir / "billing" / "aws" / "metadata").rglob("*Manifest.json"))
    assert [m.parent.name for m in manifests] == [f"BILLING_PERIOD={PERIOD}"]
    names = json.loads(manifests[0].read_text())["dataFiles"]
    assert len(names) == DAYS and all(n.startswith("s3://") for n in names)
    frame = pl.concat([read_day("aws_cur2", sample_dir / "billing" / "aws", START + dt.timedelta(days=i)) for i in range(DAYS)])
    raw = pl.concat([pl.read_parquet(_day_file(sample_dir, START + dt.timedelta(days=i)), columns=["identity_line_item_id"]) for i in range(DAYS)])
    assert frame.height == raw.height


def test_a_repeated_key_hash_in_the_ingest_pass_is_checked_against_the_files(tmp_path, sample_dir):
    """The ingest pass finds lines delivered twice from its lines' key hashes; a repeated hash sends the
    sources through the file-by-file check, which names the files of a real duplicate and lets a
    64-bit collision (the same hash, different lines) pass."""
    table = pq.read_table(_day_file(sample_dir, START))
    folder = tmp_path / "data" / f"BILLING_PERIOD={PERIOD}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-1.parquet")
    src = source("aws_cur2", tmp_path)
    collision = pl.Series("_key", [7, 7, 8], dtype=pl.UInt64)
    refuse_repeated_keys(collision, [src], [START], lambda _: Storage())  # no line repeats: passes
    pq.write_table(table.slice(200, 50), folder / "part-2.parquet")
    with pytest.raises(InputError, match=r"50 line\(s\) delivered more than once.* in data/BILLING_PERIOD=\S+/part-1\.parquet and \S+/part-2\.parquet"):
        refuse_repeated_keys(collision, [src], [START], lambda _: Storage())


def test_a_daily_cur2_files_day_from_its_footer_else_from_its_lines(tmp_path, sample_dir):
    """A file whose statistics show one day is not read for its days; without statistics, with two
    days or with zoned timestamps it is, and each way every line of the day is read once."""
    first, second = (pq.read_table(_day_file(sample_dir, START + dt.timedelta(days=d))) for d in (0, 1))
    i = first.schema.get_field_index("line_item_usage_start_date")
    zoned = first.set_column(i, "line_item_usage_start_date", first["line_item_usage_start_date"].cast(pa.timestamp("ms", "Europe/Paris")))
    cases = {"stats": (first, {}, START), "nostats": (first, {"write_statistics": False}, None),
             "two_days": (pa.concat_tables([first, second]), {}, None), "zoned": (zoned, {}, None)}
    for name, (table, options, expected) in cases.items():
        folder = tmp_path / name / "data" / f"BILLING_PERIOD={PERIOD}"
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-1.parquet", **options)
        assert single_day(folder / "part-1.parquet") == expected, name
        if name == "zoned":  # read by its own zone's dates: a Paris midnight-to-1am line is the UTC day before
            continue
        lines = read_day("aws_cur2", tmp_path / name, START)
        assert lines.height == first.num_rows and lines["line_item_id"].n_unique() == first.num_rows, name
    assert read_day("aws_cur2", tmp_path / "two_days", START + dt.timedelta(days=1)).height == second.num_rows
