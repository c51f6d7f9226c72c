"""Azure cost details exports: the public EA samples and header variants, against independent sums."""

import csv
import datetime as dt
import json
import re
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import polars as pl
import pytest

from cost_pipeline.lib.billing.azure import read_azure_file
from cost_pipeline.lib.errors import InputError
from cost_pipeline_tests.conftest import SHARED_DATA, needs_shared_data, read_day, source

EA = SHARED_DATA / "azure_ea"
HEADERS = SHARED_DATA / "azure_headers"
Q = Decimal("1e-12")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _read(path: Path, **options):
    return read_azure_file(path, str(path), path.name, source("azure_cost_export", **options))


@needs_shared_data(EA)
def test_ea_amortized_export_effective_and_billed_cost_by_hand():
    path = EA / "EA_AmortizedCost_Small.csv"
    rows = _rows(path)
    lines = _read(path)
    cost = sum(Decimal(r["Cost"]).quantize(Q, ROUND_HALF_EVEN) for r in rows)
    # commitment-covered usage is billed through its purchase (actual export), so its billed view is 0
    billed = sum(Decimal(r["Cost"]).quantize(Q, ROUND_HALF_EVEN) for r in rows if r["PricingModel"] not in ("Reservation", "SavingsPlan"))
    assert (lines.height, lines["effective_cost"].sum(), lines["billed_cost"].sum()) == (len(rows), cost, billed)
    assert billed != cost  # the sample has one reservation- and one savings-plan-covered line
    assert set(lines["currency"]) == {"USD"} and set(lines["provider"]) == {"azure"}
    first = rows[0]
    assert lines["date"][0] == dt.datetime.strptime(first["Date"], "%m/%d/%Y").date()


@needs_shared_data(EA)
def test_ea_actual_export_and_its_historical_tags_form():
    path = EA / "EA_ActualCost_Small.csv"
    rows = _rows(path)
    lines = _read(path, dataset="actual")
    cost = sum(Decimal(r["Cost"]).quantize(Q, ROUND_HALF_EVEN) for r in rows)
    assert (lines.height, lines["effective_cost"].sum(), lines["billed_cost"].sum()) == (len(rows), cost, cost)
    assert set(lines["charge_category"]) == {"Usage", "Purchase"}
    tagged = next(i for i, r in enumerate(rows) if r["Tags"])
    expected = json.loads("{" + rows[tagged]["Tags"] + "}")  # the sample writes the object without braces
    got = lines["tags"].cast(pl.List(pl.Struct({"key": pl.String, "value": pl.String}))).to_list()[tagged]
    assert {e["key"]: e["value"] for e in got} == expected


@needs_shared_data(HEADERS)
@pytest.mark.parametrize("name, currency, cost", [
    ("headersets/Enterprise.csv", "CAD", "0"), ("headersets/EnterpriseCamel.csv", "USD", "0.012"),
    ("headersets/German.csv", "USD", "0.075"), ("headersets/PayAsYouGo.csv", "USD", "0.075"), ("headersets/YA.csv", "USD", "0.075"),
])
def test_header_variants(name, currency, cost):
    lines = _read(HEADERS / name)
    assert lines.height == 1 and lines["currency"].to_list() == [currency] and lines["effective_cost"].to_list() == [Decimal(cost)]
    assert lines["date"].to_list() == [dt.date(2021, 2, 2)]


@needs_shared_data(HEADERS)
def test_exports_without_a_currency_column_need_the_sources_currency():
    path = HEADERS / "values" / "Template.csv"
    with pytest.raises(InputError, match=r"Template\.csv: missing required Azure cost export column\(s\): currency"):
        _read(path)
    rows = _rows(path)
    lines = _read(path, currency="EUR")
    assert lines.height == len(rows) and set(lines["currency"]) == {"EUR"}
    assert lines["effective_cost"].sum() == sum(Decimal(r["costinbillingcurrency"]).quantize(Q, ROUND_HALF_EVEN) for r in rows)
    missing_brackets = _read(HEADERS / "values" / "MissingBrackets.csv", currency="EUR")
    assert missing_brackets["tags"].map.get("creationSource").to_list() == ["aks-aks-nodepool1-12345678-vmss"]


@needs_shared_data(EA)
def test_an_azure_export_folder_through_the_reader_flow(tmp_path):
    """Two runs of a monthly export with manifests: only the newest run is read, every day once."""
    sample = (EA / "EA_AmortizedCost_Small.csv").read_bytes()
    rows = _rows(EA / "EA_AmortizedCost_Small.csv")
    for i, run in enumerate(["run-1", "run-2"]):
        folder = tmp_path / "costs" / "ea-amortized" / "20230901-20230930" / run
        folder.mkdir(parents=True)
        (folder / "part_0_0001.csv").write_bytes(sample)
        (folder / "manifest.json").write_text(json.dumps({
            "runInfo": {"runId": run, "submittedTime": f"2023-10-0{i + 1}T00:00:00Z"},
            "blobs": [{"blobName": f"costs/ea-amortized/20230901-20230930/{run}/part_0_0001.csv"}]}))
    days = sorted({dt.datetime.strptime(r["Date"], "%m/%d/%Y").date() for r in rows})
    read = [read_day("azure_cost_export", tmp_path / "costs", d) for d in days]
    assert sum(f.height for f in read) == len(rows)
    assert {f for frame in read for f in frame["source_file"]} == {"ea-amortized/20230901-20230930/run-2/part_0_0001.csv"}


def test_a_bad_date_names_the_file_and_row(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("Date,CostInBillingCurrency,BillingCurrency\n09/01/2023,1.5,USD\n31.09.2023,2,USD\n")
    with pytest.raises(InputError, match=r"export\.csv: row 3: column Date is not a date: '31\.09\.2023'"):
        _read(path)


@needs_shared_data(EA)
@needs_shared_data(HEADERS)
@pytest.mark.parametrize("path", [*sorted(EA.glob("*.csv")), *sorted(HEADERS.rglob("*.csv"))] if EA.exists() and HEADERS.exists() else [],
                         ids=lambda p: p.name)
@pytest.mark.parametrize("options", [{"currency": "EUR"}, {"currency": "EUR", "dataset": "actual"}], ids=["amortized", "actual"])
def test_real_exports_are_streamed_with_the_lines_and_ids_of_a_whole_read(path, options):
    """Microsoft's samples (EA, MCA, pay-as-you-go, German headers, tags without braces) streamed: a pass
    checks every value, then the lines are never held whole; exactly the lines and content ids of a
    whole read, counted and summed by hand from the CSV."""
    from cost_pipeline.lib.billing.azure import scan_azure_file
    from cost_pipeline.lib.billing.sources import lazy_content_ids, with_content_ids

    where = source("azure_cost_export", **options)
    streamed = scan_azure_file(path, str(path), path.name, where)
    assert streamed is not None  # every value parses: the file is not read whole
    lines = lazy_content_ids(streamed).collect(engine="streaming")
    assert lines.equals(with_content_ids(read_azure_file(path, str(path), path.name, where)))
    rows = _rows(path)
    # the cost header by hand: its English name (in parentheses when localized), case and punctuation aside
    english = {re.sub(r"[^a-z]", "", (re.search(r"\((\w+)\)\s*$", k) or [k, k])[1].lower().lstrip("\ufeff")): k for k in rows[0]}
    cost = next(english[c] for c in ("costinbillingcurrency", "cost", "pretaxcost") if c in english)
    assert lines.height == len(rows) > 0
    assert lines["effective_cost"].sum() == sum(Decimal(r[cost] or 0).quantize(Q, ROUND_HALF_EVEN) for r in rows)


@pytest.mark.parametrize(("row", "message"), [
    ("31.09.2023,2,USD,", r"row 3: column Date is not a date: '31\.09\.2023'"),
    ("09/02/2023,2;5,USD,", r"row 3: column cost is not a number: '2;5'"),
    ("09/02/2023,2,,", r"row 3: the billing currency is empty"),
    ('09/02/2023,2,USD,"""env"": [1"', r"column Tags: not a JSON object"),
])
def test_bad_values_in_a_delivered_export_name_file_and_row(tmp_path, row, message):
    folder = tmp_path / "costs" / "202309"
    folder.mkdir(parents=True)
    path = folder / "export.csv"
    path.write_text(f'Date,CostInBillingCurrency,BillingCurrency,Tags\n09/01/2023,1.5,USD,"""env"": ""prod"""\n{row}\n')
    with pytest.raises(InputError, match=message) as err:
        read_day("azure_cost_export", tmp_path / "costs", dt.date(2023, 9, 1))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("repeated", [True, False], ids=["identical lines", "no identical lines"])
def test_an_export_with_identical_lines_is_known_so_from_its_copy_and_numbered_as_a_whole_read(tmp_path, repeated):
    """Daily Azure lines have no time of day and no ids: the same meter billing the same amount twice a
    day gives identical lines. The parsed copy records whether there are any (so the ingest numbers them
    in its first pass); either way the day's lines and ids are a whole read's, counted by hand."""
    from cost_pipeline.lib.billing.azure import identical_lines, scan_azure_file
    from cost_pipeline.lib.billing.sources import with_content_ids

    lines = ["Date,CostInBillingCurrency,BillingCurrency,MeterCategory,ResourceId,Tags"]
    tags = ['"{""ml-team"": ""t0""}"', '"{""ml-team"": ""t1"", ""env"": ""<prod>""}"', "", "  "]  # no tags: a null text, and blanks
    lines += [f"09/02/2023,{1 + i % 3}.5,USD,Virtual Machines,/subscriptions/s/vm-{i % 4 if repeated else i},{tags[i % 4]}" for i in range(24)]
    path = tmp_path / "export" / "2023-09" / "costdetails.csv"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    src = source("azure_cost_export", uri=tmp_path / "export", name="azure")
    assert scan_azure_file(path, str(path), path.name, src) is not None  # the copy is made
    assert identical_lines(path, src) is repeated
    day = read_day("azure_cost_export", tmp_path / "export", dt.date(2023, 9, 2), "azure")  # the reader flow and the ingest agree
    whole = with_content_ids(read_azure_file(path, str(path), path.name, src))
    where = ["source_file", "billing_period"]  # as delivered under the source: its name and period
    assert day.drop(where).sort("line_item_id").equals(whole.drop(where).sort("line_item_id"))
    # by hand: (vm i % 4, cost 1 + i % 3, tags i % 4) repeats every 12 lines, so each content occurs twice
    assert day.height == 24 and day["line_item_id"].str.ends_with("-1").sum() == (12 if repeated else 0)
    assert day["effective_cost"].sum() == sum(Decimal(f"{1 + i % 3}.5") for i in range(24))
    assert day["tags"].map.get("env").drop_nulls().to_list() == ["<prod>"] * 6
    assert (day["tags"].map.keys().list.len() == 0).sum() == 12  # the null and blank texts: no tags
