"""FOCUS exports: the FinOps Foundation's real sample, header variants and broken files."""

import csv
import datetime as dt
import json
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from cost_pipeline.config import TaggingConfig, TagKey
from cost_pipeline.lib.allocate import allocate
from cost_pipeline.lib.billing.fingerprint import tag_set_hash
from cost_pipeline.lib.billing.focus import read_focus_file
from cost_pipeline.lib.billing.sources import source_days
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.tags import apply_tag_schema, quarantine
from cost_pipeline_tests.conftest import SHARED_DATA, needs_shared_data, read_day, source

SAMPLE = SHARED_DATA / "focus" / "focus_sample.csv"

pytestmark = needs_shared_data(SAMPLE)


def _rows():
    with open(SAMPLE, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _dec(text):
    return Decimal(0) if text == "NULL" else Decimal(text)


def test_sample_totals_per_day_match_an_independent_sum():
    billed, effective = defaultdict(Decimal), defaultdict(Decimal)
    for r in _rows():
        day = r["ChargePeriodStart"][:10]
        billed[day] += _dec(r["BilledCost"])
        effective[day] += _dec(r["EffectiveCost"])
    lines = read_focus_file(SAMPLE, str(SAMPLE), SAMPLE.name, source("focus", name="focus"))
    assert lines.height == 1000
    got = lines.group_by("date").agg(pl.col("billed_cost").sum(), pl.col("effective_cost").sum())
    got = {str(d): (b, e) for d, b, e in got.iter_rows()}
    assert got == {d: (billed[d], effective[d]) for d in billed}
    assert sum(b for b, _ in got.values()) == Decimal("20.52022672899")
    assert dict(lines.group_by("provider").len().iter_rows()) == {"aws": 942, "microsoft": 51, "oracle": 7}


def test_read_by_day_filters_on_charge_period_start(tmp_path):
    day = dt.date(2024, 9, 25)
    (tmp_path / "2024-09").mkdir()
    (tmp_path / "2024-09" / "export.csv").write_bytes(SAMPLE.read_bytes())
    lines = read_day("focus", str(tmp_path), day, "focus")
    assert lines.height == 49 and set(lines["date"]) == {day}


SCHEMA = TaggingConfig(
    keys=[TagKey(key="ml-team", column="team"), TagKey(key="ml-environment", column="environment", allowed=["dev", "staging", "prod"])],
    aliases={"ml-team": ["business_unit", "CostCenter"], "ml-environment": ["environment", "env"]},
)


def test_sample_lines_without_required_tags_are_quarantined_and_totals_hold():
    expected_bad, total = Decimal(0), Decimal(0)
    expected_count = 0
    for r in _rows():
        total += _dec(r["EffectiveCost"])
        tags = {} if r["Tags"] == "NULL" else json.loads(r["Tags"])
        folded = {k.strip().lower(): v.strip().lower() for k, v in tags.items()}
        team = folded.get("business_unit") or folded.get("costcenter")
        env = folded.get("environment") or folded.get("env")
        # a team name with a space ("Des MoinesIT") is not a safe team name: quarantined, not coerced
        if not team or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", team) or env not in {"dev", "staging", "prod"}:
            expected_bad += _dec(r["EffectiveCost"])
            expected_count += 1
    lines = read_focus_file(SAMPLE, str(SAMPLE), SAMPLE.name, source("focus", name="focus"))
    tagged = apply_tag_schema(lines, SCHEMA)
    quarantined = quarantine(tagged)
    assert quarantined.height == expected_count >= 289
    assert quarantined["amount"].sum() == expected_bad
    allocated = allocate(tagged, "test")
    attributed = allocated.filter(pl.col("allocation") == "direct")["amount"].sum()
    assert attributed + quarantined["amount"].sum() == total == lines["effective_cost"].sum()
    assert allocated["amount"].sum() == total


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


HEADER = "BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,BillingAccountId,Tags\n"


def test_header_variants_are_recognized(tmp_path):
    snake = "\ufeffbilled_cost,effective_cost,billing_currency,charge_period_start,charge_period_end,charge_category,billing_account_id,tags\n"
    path = _write(tmp_path / "a.csv", snake + '1.25,1.00,USD,2024-09-01T00:00:00Z,2024-09-01T01:00:00Z,Usage,1,"{""ml-team"": ""x""}"\n')
    lines = read_focus_file(path, str(path), path.name, source("focus", name="f"))
    assert lines["billed_cost"].to_list() == [Decimal("1.25")]
    assert lines["tags"].map.get("ml-team").to_list() == ["x"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1.2.3,1,USD,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,NULL", r"row 3: column billed_cost is not a number: '1\.2\.3'"),
        ("1,1,USD,yesterday,2024-09-01 01:00:00,Usage,1,NULL", r"row 3: column charge_period_start is not a timestamp"),
        ('1,1,USD,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,"[1,2]"', r"expected a JSON object"),
        ("1,1,NULL,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,NULL", r"row 3: BillingCurrency is empty"),
    ],
)
def test_bad_values_name_file_and_row(tmp_path, row, message):
    good = "1,1,USD,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,NULL\n"
    path = _write(tmp_path / "bad.csv", HEADER + good + row + "\n")
    with pytest.raises(InputError, match=message) as err:
        read_focus_file(path, str(path), path.name, source("focus", name="f"))
    assert str(path) in str(err.value)


def test_missing_column_is_named(tmp_path):
    path = _write(tmp_path / "m.csv", "BilledCost,BillingCurrency\n1,USD\n")
    with pytest.raises(InputError, match="EffectiveCost"):
        read_focus_file(path, str(path), path.name, source("focus", name="f"))


def test_empty_file_is_an_empty_day(tmp_path):
    path = _write(tmp_path / "e.csv", HEADER)
    assert read_focus_file(path, str(path), path.name, source("focus", name="f")).height == 0


def test_mixed_currencies_are_kept_apart(tmp_path):
    rows = [
        "10.00,10.00,USD,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,\"{\"\"ml-team\"\": \"\"a\"\"}\"",
        "20.00,20.00,EUR,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,\"{\"\"ml-team\"\": \"\"a\"\"}\"",
        "5.00,5.00,EUR,2024-09-01 02:00:00,2024-09-01 03:00:00,Usage,1,NULL",
    ]
    path = _write(tmp_path / "mixed.csv", HEADER + "\n".join(rows) + "\n")
    lines = read_focus_file(path, str(path), path.name, source("focus", name="f"))
    schema = TaggingConfig(keys=[TagKey(key="ml-team", column="team")])
    allocated = allocate(apply_tag_schema(lines, schema), "v")
    totals = {(r["team"], r["currency"]): r["amount"] for r in allocated.iter_rows(named=True)}
    assert totals == {("a", "USD"): Decimal("10"), ("a", "EUR"): Decimal("20"), ("__unattributed__", "EUR"): Decimal("5")}


def test_unknown_currency_is_refused_naming_the_file(tmp_path):
    from cost_pipeline.config import BillingSource
    from cost_pipeline.lib.billing.sources import read_source_day

    folder = tmp_path / "focus"
    folder.mkdir()
    _write(folder / "x.csv", HEADER + "1,1,US$,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,NULL\n")
    source = BillingSource(name="f", format="focus", uri=str(folder))
    with pytest.raises(InputError, match=r"unknown currency 'US\$'") as err:
        read_source_day(source, dt.date(2024, 9, 1))
    assert "x.csv" in str(err.value)


SPEC = SHARED_DATA / "focus" / "spec_examples"
# The FOCUS 1.2 spec's example files are partly spreadsheet exports that break the spec they
# illustrate; these must be refused with the file, row and value, never guessed at.
SPEC_DEFECTS = {
    "commitment_discount_purchase_scenario_2.csv": r"row 4: column charge_period_end is not a timestamp: '2023-02-01T30:00:00Z'",
    "commitment_discount_purchase_scenario_3.csv": r"row 5: column charge_period_end is not a timestamp",
    "simple_saas": r"row 2: column list_cost is not a number: '\$",
    "saas_spend_agreements": r"row 2: column charge_period_start is not a timestamp: '4/1/25'",
    "virtual_currency_pricing_model": r"row 2: column charge_period_start is not a timestamp: '4/1/25'",
}


@needs_shared_data(SPEC)
@pytest.mark.parametrize("path", sorted(SPEC.rglob("*.csv")) if SPEC.exists() else [], ids=lambda p: p.name)
def test_every_spec_example_is_read_exactly_or_refused_clearly(path):
    defect = next((msg for prefix, msg in SPEC_DEFECTS.items() if path.name.startswith(prefix)), None)
    if defect:
        with pytest.raises(InputError, match=defect) as err:
            read_focus_file(path, str(path), path.name, source("focus", name="spec", currency="USD"))
        assert str(path) in str(err.value)
        return
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    amount = lambda r, c: Decimal(r[c]) if r[c] not in ("", "null", "NULL") else Decimal(0)  # noqa: E731
    lines = read_focus_file(path, str(path), path.name, source("focus", name="spec", currency="USD"))
    assert lines.height == len(rows)
    assert lines["billed_cost"].sum() == sum(amount(r, "BilledCost") for r in rows)
    assert lines["effective_cost"].sum() == sum(amount(r, "EffectiveCost") for r in rows)
    assert set(lines["currency"]) == {"USD"}


def test_default_currency_never_overrides_the_file(tmp_path):
    path = _write(tmp_path / "eur.csv", HEADER + "1,1,EUR,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,NULL\n")
    assert read_focus_file(path, str(path), path.name, source("focus", name="f", currency="USD"))["currency"].to_list() == ["EUR"]


TAGS = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))


def _typed_export(rows: int = 600) -> pl.DataFrame:
    """A FOCUS export typed as AWS's FOCUS Data Exports write it (amounts as numbers, periods as
    timestamps, Tags as a map) over three days, with some lines repeated exactly (two identical
    charges are two lines) and hostile tag values."""
    start = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    frame = pl.DataFrame({
        "BillingAccountId": ["111"] * rows,
        "SubAccountId": [f"{200 + i % 3}" for i in range(rows)],
        "ChargeCategory": ["Usage" if i % 10 else "Tax" for i in range(rows)],
        "ChargePeriodStart": [start + dt.timedelta(hours=i % 72) for i in range(rows)],
        "ChargePeriodEnd": [start + dt.timedelta(hours=i % 72 + 1) for i in range(rows)],
        "ServiceName": [f"svc-{i % 4}" for i in range(rows)],
        "ResourceId": [f"r-{i % 50}" for i in range(rows)],
        "ConsumedQuantity": [float(i % 7) for i in range(rows)],
        "ListCost": [round(0.25 * (i % 13), 2) for i in range(rows)],
        "BilledCost": [round(0.01 * (i % 101) + 0.0025, 4) for i in range(rows)],
        "EffectiveCost": [round(0.01 * (i % 97), 2) for i in range(rows)],
        "BillingCurrency": ["USD" if i % 5 else "EUR" for i in range(rows)],
        "ProviderName": ["AWS"] * rows,
        "Tags": [[{"key": "ml-team", "value": ["search", 'a "quoted" team', "naïve\n"][i % 3]}] if i % 4 else [] for i in range(rows)],
    }, schema_overrides={"Tags": TAGS}).with_columns(pl.col("Tags").cast(pl.Map(pl.String, pl.String)))
    return pl.concat([frame, frame.slice(7, 3), frame.slice(7, 1), frame.slice(300, 2)])


@pytest.mark.parametrize("kind", ["parquet", "csv.gz"])
def test_a_typed_export_is_streamed_with_the_lines_and_ids_of_a_whole_read(tmp_path, kind):
    """Parquet as AWS's FOCUS Data Exports type it (Tags a map), and the same lines as CSV.gz (Tags a
    JSON object): streamed, with the lines and content ids of a whole read, hostile tags included."""
    import gzip

    from cost_pipeline.lib.billing.focus import scan_focus_file
    from cost_pipeline.lib.billing.sources import with_content_ids

    export = _typed_export()
    (tmp_path / "2026-09").mkdir()
    path = tmp_path / "2026-09" / f"export.{kind}"
    if kind == "parquet":
        export.write_parquet(path, row_group_size=100)
    else:
        as_json = [json.dumps({e["key"]: e["value"] for e in entries}) if entries else None for entries in export["Tags"].cast(TAGS).to_list()]
        path.write_bytes(gzip.compress(export.with_columns(pl.Series("Tags", as_json, pl.String)).write_csv().encode()))
    assert scan_focus_file(path, str(path), path.name, source("focus")) is not None  # the streamed path is taken
    whole = with_content_ids(read_focus_file(path, str(path), f"2026-09/export.{kind}", source("focus", name="focus")))
    for day in (dt.date(2026, 9, 1), dt.date(2026, 9, 2), dt.date(2026, 9, 3)):
        lines = read_day("focus", str(tmp_path), day, "focus")
        assert lines.drop("billing_period").equals(whole.filter(pl.col("date") == day).drop("billing_period"))
        # by hand, from the export itself: lines and amounts of the day per currency, each line's team as given
        raw = export.filter(pl.col("ChargePeriodStart").dt.date() == day)
        for currency in ("USD", "EUR"):
            mine, theirs = lines.filter(pl.col("currency") == currency), raw.filter(pl.col("BillingCurrency") == currency)
            assert mine.height == theirs.height > 0
            assert mine["billed_cost"].sum() == sum(Decimal(repr(v)) for v in theirs["BilledCost"])
            assert sorted(mine["tags"].map.get("ml-team").drop_nulls().to_list()) == sorted(theirs["Tags"].map.get("ml-team").drop_nulls().to_list())
    # identical lines are told apart by their occurrence: every id is unique, and 6 lines repeat another
    assert whole["line_item_id"].n_unique() == whole.height == 606
    assert whole["line_item_id"].str.ends_with("-0").sum() == 600


def test_a_batch_of_days_with_identical_lines_is_written_with_numbered_ids(tmp_path):
    """The write pass leaves content ids unnumbered; identical lines then share a key, and the batch is
    written again with ids numbered: each day holds every line of the export once, told apart."""
    from cost_pipeline.lib.billing.sources import with_content_ids
    from cost_pipeline.lib.billing.write_day import ingest_days
    from cost_pipeline.lib.storage import Storage

    export = _typed_export()
    (tmp_path / "export" / "2026-09").mkdir(parents=True)
    export.write_parquet(tmp_path / "export" / "2026-09" / "export.parquet", row_group_size=100)
    days = [dt.date(2026, 9, d) for d in (1, 2, 3)]
    (tmp_path / "lake").mkdir()
    paths = {day: tmp_path / "lake" / f"{day}.parquet" for day in days}
    src = source("focus", tmp_path / "export", name="focus")
    maps: list[pl.DataFrame] = []  # the Tags maps hashed from their dictionary pages, the lines read without them
    plan = source_days(src, days, Storage(), sums_checked=True, keys_checked=True, maps=maps)
    assert maps and maps[0].height == 4 and plan.select(pl.col("tags").is_null().all()).collect().item()
    sums, tag_sets = ingest_days([src], days, lambda _: Storage(), paths)
    whole = with_content_ids(read_focus_file(tmp_path / "export" / "2026-09" / "export.parquet", "x", "2026-09/export.parquet", source("focus", name="focus")))
    written = pl.concat([pl.read_parquet(paths[day]) for day in days])
    assert written.height == int(sums["fp_lines"].sum()) == export.height == 606  # lines in == lines out
    assert written["line_item_id"].n_unique() == 606 and written["line_item_id"].str.ends_with("-0").sum() == 600
    assert sorted(written["line_item_id"].to_list()) == sorted(whole["line_item_id"].to_list())  # the ids of a whole read
    # each line's tag set is the definition's hash of its map as delivered (matched by its content id)
    expected = whole.select("line_item_id", expected=tag_set_hash())
    joined = written.select("line_item_id", "tag_set").join(expected, on="line_item_id")
    assert joined.height == 606 and (joined["tag_set"] == joined["expected"]).all()
    assert tag_sets.height == 3 * 4  # each day: the three teams and the empty map
    for day in days:  # by hand, from the export: each day's billed cost
        by_hand = sum(Decimal(repr(v)) for v in export.filter(pl.col("ChargePeriodStart").dt.date() == day)["BilledCost"])
        assert pl.read_parquet(paths[day])["billed_cost"].sum() == by_hand


def test_a_column_named_like_the_readers_row_index_is_read_as_any_other(tmp_path):
    """The map hashes gather by a row index named ``_row``; an export with a column of that name is read
    by its maps instead (Polars refused the index beside it), with every line and its tags."""
    export = _typed_export().with_columns(_row=pl.lit("x"))
    (tmp_path / "2026-09").mkdir()
    export.write_parquet(tmp_path / "2026-09" / "export.parquet", row_group_size=100)
    day = dt.date(2026, 9, 2)
    lines = read_day("focus", str(tmp_path), day, "focus")
    raw = export.filter(pl.col("ChargePeriodStart").dt.date() == day)
    assert lines.height == raw.height > 0
    assert lines["billed_cost"].sum() == sum(Decimal(repr(v)) for v in raw["BilledCost"])
    assert sorted(lines["tags"].map.get("ml-team").drop_nulls().to_list()) == sorted(raw["Tags"].map.get("ml-team").drop_nulls().to_list())


def test_a_focus_parquet_delivered_twice_is_an_error_naming_both(tmp_path):
    export = _typed_export()
    (tmp_path / "2026-09").mkdir()
    export.write_parquet(tmp_path / "2026-09" / "a.parquet")
    export.reverse().write_parquet(tmp_path / "2026-09" / "b.parquet")  # the same lines in another order
    with pytest.raises(InputError, match=r"delivered more than once.*a\.parquet and .*b\.parquet"):
        read_day("focus", str(tmp_path), dt.date(2026, 9, 2), "focus")


def test_a_parquet_export_with_amounts_as_text_is_read_whole_and_a_bad_one_named(tmp_path):
    export = _typed_export(40).with_columns(pl.col("BilledCost").cast(pl.String))
    export = export.with_columns(pl.when(pl.int_range(pl.len()) == 17).then(pl.lit("12,5")).otherwise(pl.col("BilledCost")).alias("BilledCost"))
    (tmp_path / "2026-09").mkdir()
    export.write_parquet(tmp_path / "2026-09" / "text.parquet")
    with pytest.raises(InputError, match=r"text\.parquet: row 19: column billed_cost is not a number: '12,5'"):
        read_day("focus", str(tmp_path), dt.date(2026, 9, 1), "focus")


@needs_shared_data(SPEC)
@pytest.mark.parametrize("path", [SAMPLE, *(sorted(SPEC.rglob("*.csv")) if SPEC.exists() else [])], ids=lambda p: p.name)
def test_csv_exports_are_streamed_with_the_lines_and_ids_of_a_whole_read(tmp_path, path):
    """The real sample and every spec example through the reader flow: streamed (a pass to check the
    values, then the lines never held whole) with exactly the lines and content ids of a whole read, or
    refused with the whole read's message naming file and row."""
    from cost_pipeline.lib.billing.focus import scan_focus_file
    from cost_pipeline.lib.billing.sources import lazy_content_ids, with_content_ids

    spec = source("focus", name="spec", currency="USD")
    defect = next((msg for prefix, msg in SPEC_DEFECTS.items() if path.name.startswith(prefix)), None)
    streamed = scan_focus_file(path, str(path), path.name, spec)
    if defect:
        assert streamed is None  # read whole, which names the row
        return
    assert streamed is not None
    whole = with_content_ids(read_focus_file(path, str(path), path.name, spec))
    lines = lazy_content_ids(streamed).collect(engine="streaming")
    assert lines.height == whole.height > 0 and lines.equals(whole)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1.2.3,1,USD,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,NULL", r"row 3: column billed_cost is not a number: '1\.2\.3'"),
        ("1,1,USD,yesterday,2024-09-01 01:00:00,Usage,1,NULL", r"row 3: column charge_period_start is not a timestamp"),
        ('1,1,USD,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,"[1,2]"', r"column tags: expected a JSON object"),
        ("1,1,NULL,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,NULL", r"row 3: BillingCurrency is empty"),
    ],
)
def test_bad_values_in_a_delivered_csv_name_file_and_row(tmp_path, row, message):
    (tmp_path / "2024-09").mkdir()
    path = _write(tmp_path / "2024-09" / "bad.csv", HEADER + "1,1,USD,2024-09-01 00:00:00,2024-09-01 01:00:00,Usage,1,NULL\n" + row + "\n")
    with pytest.raises(InputError, match=message) as err:
        read_day("focus", str(tmp_path), dt.date(2024, 9, 1), "focus")
    assert str(path) in str(err.value)
