"""Legacy CUR: the public koku samples, manifests and assemblies, restatements."""

import csv
import datetime as dt
import json
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cost_pipeline.lib.billing.cur_legacy import read_legacy_file
from cost_pipeline.lib.billing.schema import MAP_ENTRIES
from cost_pipeline.lib.errors import InputError
from cost_pipeline.sample.cur_legacy import deliver, tag_header, write_files
from cost_pipeline_tests.conftest import SHARED_DATA, START, needs_shared_data, read_day, source

LEGACY = SHARED_DATA / "aws_cur_legacy"
Q = Decimal("1e-12")


def _get(row: dict, *names: str) -> str:
    folded = {k.replace("/", "").replace("_", "").lower(): v for k, v in row.items()}
    for name in names:
        value = folded.get(name.replace("/", "").replace("_", "").lower())
        if value not in (None, ""):
            return value
    return "0"


def _oracle(path: Path) -> tuple[int, Decimal, Decimal]:
    """Amortization by hand over the CSV text, each amount held to 12 places like the lake."""
    billed = effective = Decimal(0)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        d = lambda *n: Decimal(_get(r, *n)).quantize(Q, ROUND_HALF_EVEN)  # noqa: E731
        unblended = d("lineItem/UnblendedCost")
        billed += unblended
        kind = _get(r, "lineItem/LineItemType")
        if kind == "SavingsPlanCoveredUsage":
            effective += d("savingsPlan/SavingsPlanEffectiveCost")
        elif kind == "DiscountedUsage":
            effective += d("reservation/EffectiveCost")
        elif kind in ("SavingsPlanNegation", "SavingsPlanUpfrontFee"):
            pass
        else:
            effective += unblended
    return len(rows), billed, effective


@needs_shared_data(LEGACY)
@pytest.mark.parametrize("name", ["2023-06-01.csv", "2023-06-01-not-final.csv", "2022-07-01-alt-columns.csv", "test_cur.csv"])
def test_public_samples_match_an_independent_sum(name):
    path = LEGACY / name
    lines = read_legacy_file(path, str(path), name, source("aws_cur_legacy", name="legacy"))
    rows, billed, effective = _oracle(path)
    assert (lines.height, lines["billed_cost"].sum(), lines["effective_cost"].sum()) == (rows, billed, effective)


@needs_shared_data(LEGACY)
@pytest.mark.parametrize("name", ["2023-06-01.csv", "2023-06-01-not-final.csv", "2022-07-01-alt-columns.csv", "test_cur.csv"])
def test_public_samples_are_streamed_with_the_lines_of_a_whole_read(name):
    from cost_pipeline.lib.billing.cur_legacy import scan_legacy_file

    path = LEGACY / name
    streamed = scan_legacy_file(path, str(path), name, source("aws_cur_legacy", name="legacy"))
    assert streamed is not None  # every value parses: the file is not read whole
    lines = streamed.collect(engine="streaming")
    rows, billed, effective = _oracle(path)
    assert (lines.height, lines["billed_cost"].sum(), lines["effective_cost"].sum()) == (rows, billed, effective)
    assert lines.equals(read_legacy_file(path, str(path), name, source("aws_cur_legacy", name="legacy")))


@needs_shared_data(LEGACY)
def test_final_and_estimated_are_told_apart_and_tags_are_read():
    final = read_legacy_file(LEGACY / "2023-06-01.csv", "f", "f", source("aws_cur_legacy", name="l"))
    estimated = read_legacy_file(LEGACY / "2023-06-01-not-final.csv", "e", "e", source("aws_cur_legacy", name="l"))
    assert final["is_final"].all() and not estimated["is_final"].any()
    assert final["effective_cost"].sum() == Decimal("0.3")  # three SP-covered hours at 0.1, not the 10 on-demand
    alt = read_legacy_file(LEGACY / "2022-07-01-alt-columns.csv", "a", "a", source("aws_cur_legacy", name="l"))
    assert alt["tags"].map.get("aws_created_by").to_list()[0] == "IAMUser:fake:and"


def _day_table(sample_dir: Path, day: dt.date, factor: float = 1.0) -> pa.Table:
    table = pq.read_table(sample_dir / "billing" / "aws" / "data" / f"BILLING_PERIOD={day:%Y-%m}" / f"acme-ml-cur2-{day.day:05d}.snappy.parquet")
    if factor != 1.0:
        i = table.schema.get_field_index("line_item_unblended_cost")
        table = table.set_column(i, "line_item_unblended_cost", pc.round(pc.multiply(table["line_item_unblended_cost"], factor), 8))
    return table


def test_manifest_picks_the_current_assembly(tmp_path, sample_dir):
    day1, day2 = START, START + dt.timedelta(days=1)
    first = pa.concat_tables([_day_table(sample_dir, day1), _day_table(sample_dir, day2)])
    restated = pa.concat_tables([_day_table(sample_dir, day1), _day_table(sample_dir, day2, factor=1.1)])
    files = deliver({}, "acme", START.replace(day=1), "asm-1", first)
    write_files(tmp_path, files)
    uri = str(tmp_path / "cur" / "acme")
    before = [read_day("aws_cur_legacy", uri, d, "legacy") for d in (day1, day2)]
    write_files(tmp_path, deliver({}, "acme", START.replace(day=1), "asm-2", restated))
    after = [read_day("aws_cur_legacy", uri, d, "legacy") for d in (day1, day2)]
    assert after[0].height == before[0].height  # both assemblies on disk, only one read
    assert after[0]["billed_cost"].sum() == before[0]["billed_cost"].sum()
    expected = sum(Decimal(repr(v)).quantize(Q, ROUND_HALF_EVEN) for v, t in zip(restated["line_item_unblended_cost"].to_pylist(), restated["line_item_usage_start_date"].to_pylist()) if t.date() == day2)
    assert after[1]["billed_cost"].sum() == expected != before[1]["billed_cost"].sum()


def test_manifest_naming_a_missing_file_is_an_error(tmp_path, sample_dir):
    files = deliver({}, "acme", START.replace(day=1), "asm-1", _day_table(sample_dir, START))
    manifest_key = next(k for k in files if k.endswith("Manifest.json"))
    body = json.loads(files[manifest_key])
    body["reportKeys"].append(body["reportKeys"][0].replace("-1.csv.gz", "-2.csv.gz"))
    files[manifest_key] = json.dumps(body).encode()
    write_files(tmp_path, files)
    with pytest.raises(InputError, match=r"names missing file\(s\): .*acme-2\.csv\.gz") as err:
        read_day("aws_cur_legacy", str(tmp_path / "cur" / "acme"), START, "legacy")
    assert "Manifest.json" in str(err.value)


def test_two_assemblies_without_a_manifest_are_refused(tmp_path, sample_dir):
    files = deliver({}, "acme", START.replace(day=1), "asm-1", _day_table(sample_dir, START))
    deliver(files, "acme", START.replace(day=1), "asm-2", _day_table(sample_dir, START))
    write_files(tmp_path, {k: v for k, v in files.items() if not k.endswith("Manifest.json")})
    with pytest.raises(InputError, match="2 assemblies and no manifest"):
        read_day("aws_cur_legacy", str(tmp_path / "cur" / "acme"), START, "legacy")


def test_missing_required_column_names_file_and_column(tmp_path):
    path = tmp_path / "bare" / "cur.csv"
    path.parent.mkdir()
    path.write_text("identity/LineItemId,lineItem/LineItemType\nx,Usage\n")
    with pytest.raises(InputError, match="line_item_unblended_cost") as err:
        read_day("aws_cur_legacy", str(path.parent), START, "legacy")
    assert str(path) in str(err.value)


def test_header_variants_bom_and_case(tmp_path):
    path = tmp_path / "bare" / "cur.csv"
    path.parent.mkdir()
    header = "\ufeffIDENTITY/LINEITEMID,lineitem/lineitemtype,LineItem_UsageStartDate,lineItem/UsageEndDate,lineItem/ProductCode,lineItem/CurrencyCode,lineItem/UnblendedCost,lineItem/UsageAccountId,resourceTags/user:ml-team"
    path.write_text(header + "\nx1,Usage,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,AmazonEC2,USD,1.25,111,fraud-detection\n", encoding="utf-8")
    lines = read_day("aws_cur_legacy", str(path.parent), START, "legacy")
    assert lines["billed_cost"].to_list() == [Decimal("1.25")] and lines["tags"].map.get("user:ml-team").to_list() == ["fraud-detection"]


def test_unparseable_number_names_file_and_row(tmp_path):
    path = tmp_path / "bare" / "cur.csv"
    path.parent.mkdir()
    header = "identity/LineItemId,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/UsageEndDate,lineItem/ProductCode,lineItem/CurrencyCode,lineItem/UnblendedCost,lineItem/UsageAccountId"
    path.write_text(header + "\nx1,Usage,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,AmazonEC2,USD,1.25,111\nx2,Usage,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,AmazonEC2,USD,12x5,111\n")
    with pytest.raises(InputError, match=r"row 3: column line_item_unblended_cost is not a number") as err:
        read_day("aws_cur_legacy", str(path.parent), START, "legacy")
    assert str(path) in str(err.value)


def _amortized_by_hand(rows: list[dict], day: dt.date) -> dict[str, tuple[int, Decimal, Decimal]]:
    """Per currency: lines, billed and effective cost of ``day``, amortized by hand from the rows."""
    d = lambda v: Decimal(repr(v or 0)).quantize(Q, ROUND_HALF_EVEN)  # noqa: E731
    out: dict[str, tuple[int, Decimal, Decimal]] = {}
    for r in rows:
        if r["line_item_usage_start_date"].date() != day:
            continue
        kind, billed = r["line_item_line_item_type"], d(r["line_item_unblended_cost"])
        effective = (d(r["savings_plan_savings_plan_effective_cost"]) if kind == "SavingsPlanCoveredUsage"
                     else d(r["reservation_effective_cost"]) if kind == "DiscountedUsage"
                     else Decimal(0) if kind in ("SavingsPlanNegation", "SavingsPlanUpfrontFee")
                     else d(r["reservation_unused_amortized_upfront_fee_for_billing_period"]) + d(r["reservation_unused_recurring_fee"]) if kind == "RIFee"
                     else d(r["savings_plan_total_commitment_to_date"]) - d(r["savings_plan_used_commitment"]) if kind == "SavingsPlanRecurringFee"
                     else billed)
        n, b, e = out.get(r["line_item_currency_code"], (0, Decimal(0), Decimal(0)))
        out[r["line_item_currency_code"]] = (n + 1, b + billed, e + effective)
    return out


def test_a_parquet_delivery_is_streamed_with_the_lines_of_a_whole_read(tmp_path, sample_dir):
    from cost_pipeline.lib.billing.cur_legacy import scan_legacy_file

    day1, day2 = START, START + dt.timedelta(days=1)
    table = pa.concat_tables([_day_table(sample_dir, day1), _day_table(sample_dir, day2)])
    # hostile tag values: quotes, a newline, a backslash, non-ASCII; and a second currency
    tags = table["resource_tags"].to_pylist()
    tags[3] = [("user_ml_team", 'a "quoted"\n\\team'), ("user_ml_project", "naïve")]
    table = table.set_column(table.schema.get_field_index("resource_tags"), "resource_tags", pa.array(tags, table.schema.field("resource_tags").type))
    currency = table["line_item_currency_code"].to_pylist()
    currency[5::7] = ["EUR"] * len(currency[5::7])
    table = table.set_column(table.schema.get_field_index("line_item_currency_code"), "line_item_currency_code", pa.array(currency))
    write_files(tmp_path, deliver({}, "acme", START.replace(day=1), "asm-1", table, parquet=True))
    uri = tmp_path / "cur" / "acme"
    path = next(uri.rglob("*.parquet"))
    assert scan_legacy_file(path, str(path), path.name, source("aws_cur_legacy")) is not None  # the streamed path is taken
    whole = read_legacy_file(path, str(path), str(path.relative_to(uri)), source("aws_cur_legacy", name="legacy"))
    rows = table.to_pylist()
    for day in (day1, day2):
        lines = read_day("aws_cur_legacy", str(uri), day, "legacy")
        assert lines.drop("billing_period").equals(whole.filter(pl.col("date") == day).drop("billing_period"))
        by_hand = _amortized_by_hand(rows, day)
        assert set(by_hand) == {"USD", "EUR"}
        for currency, (n, billed, effective) in by_hand.items():
            mine = lines.filter(pl.col("currency") == currency)
            assert (mine.height, mine["billed_cost"].sum(), mine["effective_cost"].sum()) == (n, billed, effective)
    hostile = read_day("aws_cur_legacy", str(uri), rows[3]["line_item_usage_start_date"].date(), "legacy")
    hostile = hostile.filter(pl.col("line_item_id") == rows[3]["identity_line_item_id"])
    assert hostile["tags"].map.get("user_ml_team").to_list() == ['a "quoted"\n\\team']
    assert hostile["tags"].map.get("user_ml_project").to_list() == ["naïve"]


def test_a_parquet_line_without_an_amount_names_the_file_and_line(tmp_path, sample_dir):
    table = _day_table(sample_dir, START)
    covered = table["line_item_line_item_type"].to_pylist().index("SavingsPlanCoveredUsage")
    values = table["savings_plan_savings_plan_effective_cost"].to_pylist()
    values[covered] = None
    table = table.set_column(table.schema.get_field_index("savings_plan_savings_plan_effective_cost"), "savings_plan_savings_plan_effective_cost",
                             pa.array(values, pa.float64()))
    write_files(tmp_path, deliver({}, "acme", START.replace(day=1), "asm-1", table, parquet=True))
    line = table["identity_line_item_id"][covered].as_py()
    with pytest.raises(InputError, match=rf"acme-1\.snappy\.parquet: 1 line\(s\) without an amount, e\.g\. line {line} \(SavingsPlanCoveredUsage\)"):
        read_day("aws_cur_legacy", str(tmp_path / "cur" / "acme"), START, "legacy")


def test_a_parquet_delivery_with_amounts_as_text_is_read_whole_and_a_bad_one_named(tmp_path, sample_dir):
    table = _day_table(sample_dir, START)
    amounts = [repr(v) for v in table["line_item_unblended_cost"].to_pylist()]
    amounts[9] = "12,5"
    table = table.set_column(table.schema.get_field_index("line_item_unblended_cost"), "line_item_unblended_cost", pa.array(amounts))
    write_files(tmp_path, deliver({}, "acme", START.replace(day=1), "asm-1", table, parquet=True))
    with pytest.raises(InputError, match=r"acme-1\.snappy\.parquet: row 10: column line_item_unblended_cost is not a number: '12,5'"):
        read_day("aws_cur_legacy", str(tmp_path / "cur" / "acme"), START, "legacy")


CSV_HEADER = "identity/LineItemId,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/UsageEndDate,lineItem/ProductCode,lineItem/CurrencyCode,lineItem/UnblendedCost,lineItem/UsageAccountId"


@pytest.mark.parametrize(("bad", "message"), [
    ("x2,Usage,2026-09-01 25:00:00,2026-09-01T01:00:00Z,AmazonEC2,USD,1.25,111", r"row 4: column line_item_usage_start_date is not a timestamp: '2026-09-01 25:00:00'"),
    ("x2,Usage,,2026-09-01T01:00:00Z,AmazonEC2,USD,1.25,111", r"row 4: column line_item_usage_start_date is empty"),
    ("x2,Usage,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,AmazonEC2,USD, ,111", r"row 4: column line_item_unblended_cost is not a number: ' '"),
])
def test_a_bad_value_in_a_streamed_csv_names_its_row(tmp_path, bad, message):
    import gzip

    path = tmp_path / "bare" / "cur.csv.gz"
    path.parent.mkdir()
    good = "x1,Usage,2026-09-01T00:00:00Z,2026-09-01T01:00:00Z,AmazonEC2,USD,1.25,111"
    path.write_bytes(gzip.compress(f"{CSV_HEADER}\n{good}\r\n\r\n{bad}\n{good.replace('x1', 'x3')}\n".encode()))
    with pytest.raises(InputError, match=message) as err:
        read_day("aws_cur_legacy", str(path.parent), START, "legacy")
    assert str(path) in str(err.value)


def test_processes_parsing_one_csv_at_once_share_one_complete_copy(tmp_path, sample_dir):
    """A backfill's days run in parallel can parse the same month file at once: each gets every line,
    one parsed copy is published whole, and no half-written copy is left behind."""
    from concurrent.futures import ThreadPoolExecutor

    from cost_pipeline.lib.billing.cur_legacy import scan_legacy_file
    from cost_pipeline.lib.billing.spill import folder_for

    table = pa.concat_tables([_day_table(sample_dir, START), _day_table(sample_dir, START + dt.timedelta(days=1))])
    write_files(tmp_path, deliver({}, "acme", START.replace(day=1), "asm-1", table))
    path = next((tmp_path / "cur").rglob("*.csv.gz"))
    legacy = source("aws_cur_legacy", name="legacy")
    with ThreadPoolExecutor(4) as pool:
        reads = list(pool.map(lambda _: scan_legacy_file(path, str(path), path.name, legacy).collect(engine="streaming"), range(4)))
    assert all(r.height == table.num_rows and r.equals(reads[0]) for r in reads)
    folder = folder_for(path, "aws_cur_legacy")
    assert (folder / "checked.json").exists() and [p.name for p in folder.parent.glob(f"{folder.name}*")] == [folder.name]
    assert reads[0]["billed_cost"].sum() == sum(Decimal(repr(v)).quantize(Q, ROUND_HALF_EVEN) for v in table["line_item_unblended_cost"].to_pylist())


def test_parsed_copies_unused_for_a_week_are_removed_when_a_new_one_is_made(tmp_path, sample_dir):
    import os
    import time

    from cost_pipeline.lib.billing.cur_legacy import scan_legacy_file
    from cost_pipeline.lib.billing.spill import ROOT, folder_for

    legacy = source("aws_cur_legacy", name="legacy")
    files = []
    for i in range(3):
        write_files(tmp_path / str(i), deliver({}, "acme", START.replace(day=1), "asm-1", _day_table(sample_dir, START)))
        files.append(next((tmp_path / str(i)).rglob("*.csv.gz")))
    assert scan_legacy_file(files[0], "a", "a", legacy) is not None and scan_legacy_file(files[1], "b", "b", legacy) is not None
    old, recent = folder_for(files[0], "aws_cur_legacy"), folder_for(files[1], "aws_cur_legacy")
    eight_days_ago = time.time() - 8 * 86400
    os.utime(old, (eight_days_ago, eight_days_ago))
    assert scan_legacy_file(files[2], "c", "c", legacy) is not None  # a new copy is made: the stale one goes
    assert not old.exists() and recent.exists() and folder_for(files[2], "aws_cur_legacy").exists()
    assert old.parent == ROOT
    # a file read again gets its copy back, exactly
    assert scan_legacy_file(files[0], "a", "a", legacy).collect().height == _day_table(sample_dir, START).num_rows


def test_blank_lines_are_dropped_by_the_read_columns_and_a_line_with_only_unread_values_named(tmp_path):
    """A whole read drops lines empty in every column (CSV gaps); the streamed copy tests only the
    columns it reads (a real file has hundreds it does not), so a line empty there but holding a value
    in another column is looked at again: it is an error, named as a whole read names it."""
    import gzip

    from cost_pipeline.lib.billing.cur_legacy import scan_legacy_file

    header = CSV_HEADER + ",product/ProductName"
    rows = [f"x{i},Usage,2026-09-01T0{i}:00:00Z,2026-09-01T0{i + 1}:00:00Z,AmazonEC2,USD,1.2{i},111,Amazon Elastic Compute Cloud" for i in range(4)]
    gaps = f"{header}\n{rows[0]}\r\n\r\n{rows[1]}\n,,,,,,,,\n\n{rows[2]}\n{rows[3]}\n"
    path = tmp_path / "gaps" / "cur.csv.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(gaps.encode()))
    legacy = source("aws_cur_legacy", name="legacy")
    streamed = scan_legacy_file(path, str(path), path.name, legacy)
    assert streamed is not None  # the blank lines do not send the file to a whole read
    lines = read_day("aws_cur_legacy", str(path.parent), START, "legacy")
    assert lines.height == 4 and lines["billed_cost"].sum() == Decimal("1.20") + Decimal("1.21") + Decimal("1.22") + Decimal("1.23")
    assert streamed.collect().equals(read_legacy_file(path, str(path), path.name, legacy))

    only_unread = gaps.replace(",,,,,,,,\n", ",,,,,,,,Amazon Simple Storage Service\n")
    path = tmp_path / "unread" / "cur.csv.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(only_unread.encode()))
    assert scan_legacy_file(path, str(path), path.name, legacy) is None  # read whole: the whole read names the line
    with pytest.raises(InputError, match=r"row 5: column line_item_usage_start_date is empty") as err:
        read_day("aws_cur_legacy", str(path.parent), START, "legacy")
    assert str(path) in str(err.value)


@pytest.mark.parametrize("parquet", [True, False])
def test_an_ingest_hashes_each_distinct_combination_of_tag_columns_once_with_each_lines_tags(tmp_path, sample_dir, parquet):
    """Asked for tag-set hashes (the ingest), a streamed legacy file gives each line the hashes of the
    map its tag columns make (hostile values, an empty value like a missing one), leaves the lines'
    maps null and hands the distinct maps over: one per combination of tag values, not per line."""
    from cost_pipeline.lib.billing.cur_legacy import scan_legacy_file
    from cost_pipeline.lib.billing.fingerprint import tag_set_hash

    table = _day_table(sample_dir, START)
    tags = table["resource_tags"].to_pylist()
    tags[3] = [("user_ml_team", 'a "quoted"\n\\team'), ("user_ml_project", "naïve")]
    tags[4] = [("user_ml_team", ""), ("user_ml_project", "naïve")]  # an empty value: no such tag
    tags[5] = [("user_ml_project", "naïve")]
    tags[6] = []
    table = table.set_column(table.schema.get_field_index("resource_tags"), "resource_tags", pa.array(tags, table.schema.field("resource_tags").type))
    write_files(tmp_path, deliver({}, "acme", START.replace(day=1), "asm-1", table, parquet=parquet))
    path = next((tmp_path / "cur").rglob("*.parquet" if parquet else "*.csv.gz"))
    legacy = source("aws_cur_legacy", name="legacy")
    maps: list[pl.DataFrame] = []
    hashed = scan_legacy_file(path, str(path), path.name, legacy, days=[START], maps=maps).collect()
    whole = read_legacy_file(path, str(path), path.name, legacy)
    assert hashed.height == whole.height == table.num_rows and hashed["tags"].null_count() == table.num_rows
    assert hashed.drop("tags", "tag_set", "_check").equals(whole.drop("tags"))
    key = (lambda k: k) if parquet else (lambda k: tag_header(k)[len("resourceTags/"):])  # user_ml_team, user:ml-team
    by_hand = [sorted((key(k), v) for k, v in (t or []) if v) for t in tags]  # each line's non-empty tags
    known = pl.concat(maps)
    combinations = len({tuple(sorted((k, v) for k, v in (t or []))) for t in tags})  # "" and no value: two in Parquet, one in CSV
    assert len({tuple(t) for t in by_hand}) <= known.height <= combinations < table.num_rows  # a map per combination
    maps_by_set = dict(zip(known["tag_set"], [sorted((e["key"], e["value"]) for e in m) for m in known["tags"].cast(MAP_ENTRIES).to_list()]))
    assert [maps_by_set[s] for s in hashed["tag_set"]] == by_hand
    assert hashed["tag_set"].to_list() == whole.select(tag_set_hash()).to_series().to_list()
    assert hashed["_check"].to_list() == whole.select(tag_set_hash(seed=2)).to_series().to_list()
    assert maps_by_set[hashed["tag_set"][4]] == maps_by_set[hashed["tag_set"][5]] == [(key("user_ml_project"), "naïve")]
    day = read_day("aws_cur_legacy", str(tmp_path / "cur" / "acme"), START, "legacy")  # through the ingest: each line's map
    assert day.height == table.num_rows
