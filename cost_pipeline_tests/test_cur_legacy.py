"""Legacy CUR: the public koku samples, manifests and assemblies, restatements."""

import csv
import datetime as dt
import json
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cost_pipeline.lib.billing.cur_legacy import read_legacy_file
from cost_pipeline.lib.errors import InputError
from cost_pipeline.sample.cur_legacy import deliver, write_files
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
