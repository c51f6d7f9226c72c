"""GCP billing export files, and a GCS bucket served by a local stand-in through google-cloud-storage."""

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from cost_pipeline.lib.billing.gcp import read_gcp_file
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.storage import Storage
from cost_pipeline.sample.gcp import gcp_rows, write_jsonl
from cost_pipeline_tests.gcs_standin import gcs_standin

DAY = dt.date(2026, 9, 3)
from cost_pipeline_tests.conftest import read_day, source


def _expected(rows):
    billed = sum(Decimal(repr(r["cost"])) for r in rows)
    credits = sum(Decimal(repr(c["amount"])) for r in rows for c in r["credits"])
    return billed, billed + credits


def test_jsonl_export_totals_credits_and_labels(tmp_path):
    rows = gcp_rows(DAY, 60, seed=1)
    path = write_jsonl(tmp_path / "export" / "billing-000.jsonl", rows)
    lines = read_gcp_file(path, str(path), path.name, source("gcp_billing_export", name="gcp"))
    billed, effective = _expected(rows)
    assert (lines["billed_cost"].sum(), lines["effective_cost"].sum()) == (billed, effective)
    assert billed != effective
    first = lines.row(1, named=True)
    assert first["tags"]["ml-team"] == rows[1]["labels"][0]["value"]  # resource label wins
    assert first["tags"]["ml-project"] == rows[1]["project"]["labels"][0]["value"]  # project label fills the rest
    assert set(lines["provider"]) == {"gcp"} and lines["date"].unique().to_list() == [DAY]


def test_parquet_export_reads_the_same(tmp_path):
    rows = gcp_rows(DAY, 30, seed=2)
    jsonl = write_jsonl(tmp_path / "a.jsonl", rows)
    parquet = tmp_path / "b.parquet"
    pl.read_ndjson(jsonl).write_parquet(parquet)
    a = read_gcp_file(jsonl, "a", "x", source("gcp_billing_export", name="gcp"))
    b = read_gcp_file(parquet, "b", "x", source("gcp_billing_export", name="gcp"))
    assert a.drop("tags").equals(b.drop("tags"))


def test_missing_column_is_named(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "cost"} for r in gcp_rows(DAY, 3, seed=3)]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError, match="cost") as err:
        read_gcp_file(path, str(path), path.name, source("gcp_billing_export", name="gcp"))
    assert str(path) in str(err.value)


def test_gcs_bucket_through_the_client_library(tmp_path):
    rows = gcp_rows(DAY, 40, seed=4)
    body = "".join(__import__("json").dumps(r) + "\n" for r in rows).encode()
    objects = {"exports/gcp/billing-000.jsonl": body, "exports/gcp/README.txt": b"not data"}
    with gcs_standin(objects) as client:
        storage = Storage(gcs_client=client, cache_dir=tmp_path / "cache")
        lines = read_day("gcp_billing_export", "gs://billing-bucket/exports/gcp", DAY, "gcp", storage)
    billed, effective = _expected(rows)
    assert (lines.height, lines["billed_cost"].sum(), lines["effective_cost"].sum()) == (40, billed, effective)


def test_bigquery_table_through_the_client_library(tmp_path):
    from cost_pipeline_tests.bigquery_standin import bigquery_standin

    rows = gcp_rows(DAY, 25, seed=5) + gcp_rows(DAY + dt.timedelta(days=1), 10, seed=6)
    with bigquery_standin(rows) as (client, state):
        storage = Storage(bq_client=client)
        lines = read_day("gcp_billing_export", "bq://billing-project.billing.gcp_billing_export_resource_v1_X", DAY, "gcp", storage)
    sql = " ".join(state["queries"][0].split())
    assert "DATE(_PARTITIONTIME) >= DATE_SUB(@day, INTERVAL 1 DAY)" in sql and "usage_start_time >= TIMESTAMP(@day)" in sql
    assert "DATE_ADD(@day, INTERVAL 5 DAY)" not in sql  # no upper partition bound: late rows are in later partitions
    # only the columns the mapping reads (BigQuery bills the bytes of every column a query names)
    assert sql.startswith("SELECT `billing_account_id`, `service`, `sku`, `project`, `labels`, `location`, `resource`, ")
    assert "*" not in sql and "export_time" not in sql
    billed, effective = _expected(rows[:25])
    assert (lines.height, lines["billed_cost"].sum(), lines["effective_cost"].sum()) == (25, billed, effective)
    resource_teams = sorted(r["labels"][0]["value"] if r["labels"] else "project-level" for r in rows[:25])
    assert sorted(lines["tags"].map.get("ml-team").to_list()) == resource_teams  # resource labels win over the project's
    assert set(lines["date"]) == {DAY}


def test_bigquery_rows_exported_two_days_later_are_picked_up_and_the_day_rerun(tmp_path):
    """GCP adds rows for past days: the sensor's query sees the day change after its cursor, and the
    day's query (every partition from the day on) returns the late rows too."""
    from cost_pipeline.lib.billing.gcp import bigquery_changed_days
    from cost_pipeline_tests.bigquery_standin import bigquery_standin

    table = "billing-project.billing.gcp_billing_export_resource_v1_X"
    first_export = dt.datetime(2026, 9, 2, 4, tzinfo=dt.UTC)
    rows = gcp_rows(DAY, 20, seed=7, exported=first_export)
    with bigquery_standin(rows) as (client, _state):
        storage = Storage(bq_client=client)
        before = read_day("gcp_billing_export", f"bq://{table}", DAY, "gcp", storage)
        assert bigquery_changed_days(table, first_export - dt.timedelta(hours=1), client) == [(DAY, first_export, 20)]
        assert bigquery_changed_days(table, first_export, client) == []  # nothing new after the cursor
        late_export = first_export + dt.timedelta(days=2)
        rows.extend(gcp_rows(DAY, 5, seed=8, exported=late_export))
        assert bigquery_changed_days(table, first_export, client) == [(DAY, late_export, 5)]
        after = read_day("gcp_billing_export", f"bq://{table}", DAY, "gcp", storage)
    billed, effective = _expected(rows)
    assert before.height == 20 and (after.height, after["billed_cost"].sum(), after["effective_cost"].sum()) == (25, billed, effective)


def test_a_bigquery_export_without_the_detailed_columns_is_read_without_naming_them(tmp_path):
    """The standard export has no ``resource`` nor (in older tables) ``cost_at_list``: the day's query
    names only the columns the table has, and its lines are read with no resource ids."""
    from cost_pipeline_tests.bigquery_standin import bigquery_standin

    rows = gcp_rows(DAY, 12, seed=9)
    with bigquery_standin(rows, without=("resource", "cost_at_list")) as (client, state):
        lines = read_day("gcp_billing_export", "bq://billing-project.billing.gcp_billing_export_v1_X", DAY, "gcp", Storage(bq_client=client))
    sql = " ".join(state["queries"][0].split())
    assert "`resource`" not in sql and "cost_at_list" not in sql and "`credits`" in sql
    billed, effective = _expected(rows)
    assert (lines.height, lines["billed_cost"].sum(), lines["effective_cost"].sum()) == (12, billed, effective)
    assert lines["resource_id"].is_null().all() and lines["list_cost"].is_null().all()


def test_a_bigquery_table_that_does_not_exist_is_named(tmp_path):
    from cost_pipeline.lib.billing.sources import read_source_day
    from cost_pipeline_tests.bigquery_standin import bigquery_standin

    table = "billing-project.billing.gcp_billing_export_v1_TYPO"
    with bigquery_standin([], missing_table=True) as (client, state):
        with pytest.raises(InputError, match=rf"bq://{table}: cannot read the billing export table: 404 .*Not found"):
            read_source_day(source("gcp_billing_export", f"bq://{table}", name="gcp"), DAY, Storage(bq_client=client))
    assert state["queries"] == []  # nothing queried, nothing billed


def test_a_bigquery_day_is_fetched_and_written_a_page_at_a_time(tmp_path):
    """A day of the export is never held whole: each page of the query's result is normalized and
    written on its own, and the pages together are exactly the day (ids as one read gives them)."""
    from cost_pipeline.lib.billing.gcp import bigquery_day_files
    from cost_pipeline.lib.billing.sources import lazy_content_ids
    from cost_pipeline_tests.bigquery_standin import bigquery_standin

    rows = gcp_rows(DAY, 25, seed=10) + gcp_rows(DAY, 3, seed=10)  # three lines repeated exactly: told apart by occurrence
    table = "billing-project.billing.gcp_billing_export_resource_v1_X"
    with bigquery_standin(rows) as (client, state):
        paged = bigquery_day_files(table, DAY, "gcp", client, tmp_path / "paged", page_rows=10)
        pages = list(state["pages"])
        whole = bigquery_day_files(table, DAY, "gcp", client, tmp_path / "whole", page_rows=1000)
    assert len(paged) == 3 and pages == [10, 10, 10] and len(whole) == 1
    assert [pl.read_parquet(p).height for p in paged] == [10, 10, 8]
    lines = lazy_content_ids(pl.scan_parquet(paged)).collect()
    assert lines.equals(lazy_content_ids(pl.scan_parquet(whole)).collect())
    billed, effective = _expected(rows)
    assert (lines.height, lines["billed_cost"].sum(), lines["effective_cost"].sum()) == (28, billed, effective)
    assert lines["line_item_id"].n_unique() == 28 and lines["line_item_id"].str.ends_with("-1").sum() == 3


def test_an_export_file_is_streamed_a_batch_at_a_time_with_the_lines_and_ids_of_a_whole_read(tmp_path):
    from cost_pipeline.lib.billing.gcp import scan_gcp_file
    from cost_pipeline.lib.billing.sources import lazy_content_ids, with_content_ids

    rows = gcp_rows(DAY, 23, seed=11) + gcp_rows(DAY + dt.timedelta(days=1), 9, seed=12) + gcp_rows(DAY, 2, seed=11)
    rows[4]["labels"] = [{"key": "ml-team", "value": 'a "quoted"\n\\team'}]  # hostile label value
    jsonl = write_jsonl(tmp_path / "export" / "billing-000.jsonl", rows)
    parquet = tmp_path / "export" / "billing-001.parquet"
    pl.read_ndjson(jsonl, infer_schema_length=None).write_parquet(parquet)
    gcp = source("gcp_billing_export", name="gcp")
    for path in (jsonl, parquet):
        whole = with_content_ids(read_gcp_file(path, str(path), path.name, gcp))
        batched = lazy_content_ids(scan_gcp_file(path, str(path), path.name, gcp, page_rows=5)).collect()
        assert len(list((tmp_path / "export").glob("*"))) == 2  # nothing written beside the export
        assert batched.equals(whole) and batched.height == 34
        billed, effective = _expected(rows)
        assert (batched["billed_cost"].sum(), batched["effective_cost"].sum()) == (billed, effective)
        assert batched["line_item_id"].str.ends_with("-1").sum() == 2  # the two repeated rows told apart
        assert batched["tags"].map.get("ml-team")[4] == 'a "quoted"\n\\team'
    (tmp_path / "export" / "billing-001.parquet").unlink()
    day = read_day("gcp_billing_export", str(tmp_path / "export"), DAY, "gcp")
    assert day.height == 25 and day["billed_cost"].sum() == _expected(rows[:23] + rows[32:])[0]


def test_a_bad_timestamp_in_a_later_batch_names_the_row_a_whole_read_names(tmp_path):
    from cost_pipeline.lib.billing.gcp import scan_gcp_file

    rows = gcp_rows(DAY, 12, seed=13)
    rows[8]["usage_start_time"] = "yesterday"
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    gcp = source("gcp_billing_export", name="gcp")
    with pytest.raises(InputError) as whole:
        read_gcp_file(path, str(path), path.name, gcp)
    with pytest.raises(InputError) as batched:
        scan_gcp_file(path, str(path), path.name, gcp, page_rows=5)
    assert str(batched.value) == str(whole.value) and "'yesterday'" in str(whole.value) and str(path) in str(whole.value)


def test_resource_labels_hide_project_labels_of_the_same_folded_key_on_every_repeated_pair(tmp_path):
    """Labels are merged once per distinct (resource, project) pair and joined back to the lines: each
    line must still get its own pair's tags, in the resource's order then the project's."""
    rows = gcp_rows(DAY, 40, seed=14)
    pairs = [  # (resource labels, project labels, the line's tags by hand)
        ([{"key": "ml_team", "value": "search"}], [{"key": "ml-team", "value": "platform"}, {"key": "ml-project", "value": "p"}],
         [("ml_team", "search"), ("ml-project", "p")]),  # the resource's ml_team hides the project's ml-team
        ([{"key": "ml-team", "value": "a"}, {"key": "ML_Team", "value": "b"}], [{"key": "ml-team", "value": "c"}],
         [("ml-team", "a"), ("ML_Team", "b")]),  # two spellings on the resource both stay; the project's is hidden
        ([], [{"key": "ml-team", "value": "c"}], [("ml-team", "c")]),
        ([{"key": "owner", "value": "x"}], [], [("owner", "x")]),
    ]
    for i, row in enumerate(rows):
        row["labels"], row["project"]["labels"], _ = pairs[i % len(pairs)]
    path = write_jsonl(tmp_path / "export.jsonl", rows)
    lines = read_gcp_file(path, str(path), path.name, source("gcp_billing_export", name="gcp"))
    got = lines.select(pl.col("tags").cast(pl.List(pl.Struct({"key": pl.String, "value": pl.String})))).to_series().to_list()
    assert [[(e["key"], e["value"]) for e in tags] for tags in got] == [pairs[i % len(pairs)][2] for i in range(len(rows))]


def test_typed_timestamps_of_a_parquet_extract_read_as_their_text(tmp_path):
    """BigQuery's Parquet extracts type usage times as timestamps (UTC, or zoneless meaning UTC); the
    JSON export writes "2026-09-03 04:00:00 UTC". Both give the same lines."""
    rows = gcp_rows(DAY, 30, seed=15)
    text = read_gcp_file(write_jsonl(tmp_path / "a.jsonl", rows), "a", "x", source("gcp_billing_export", name="gcp"))
    as_text = pl.read_ndjson(tmp_path / "a.jsonl", infer_schema_length=None)
    starts = [dt.datetime.strptime(r["usage_start_time"], "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=dt.UTC) for r in rows]
    for zone in ("UTC", None):
        typed = as_text.with_columns(pl.col("usage_start_time", "usage_end_time").str.strip_suffix(" UTC").str.to_datetime(time_zone=zone))
        assert isinstance(typed.schema["usage_start_time"], pl.Datetime)
        typed.write_parquet(tmp_path / "b.parquet")
        lines = read_gcp_file(tmp_path / "b.parquet", "b", "x", source("gcp_billing_export", name="gcp"))
        assert lines.equals(text)
        assert lines["charge_period_start"].to_list() == starts


def _typed_parquet(rows: list[dict], path) -> None:
    """``rows`` as BigQuery extracts the export to Parquet: usage times typed as UTC timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_jsonl = path.with_suffix(".jsonl.tmp")
    write_jsonl(tmp_jsonl, rows)
    pl.read_ndjson(tmp_jsonl, infer_schema_length=None).with_columns(
        pl.col("usage_start_time", "usage_end_time").str.strip_suffix(" UTC").str.to_datetime(time_zone="UTC")).write_parquet(path)
    tmp_jsonl.unlink()


def test_a_typed_parquet_export_is_scanned_without_pages_with_the_lines_ids_and_tag_sets_of_a_whole_read(tmp_path):
    """No page is written for a typed file; its lines, content ids and tags are a whole read's, every
    line keeps its own labels pair (resource over project, hostile values kept), and the ingest's tag
    sets hold each line's map."""
    from cost_pipeline.lib.billing import spill
    from cost_pipeline.lib.billing.fingerprint import tag_set_hash
    from cost_pipeline.lib.billing.gcp import scan_gcp_file, single_day
    from cost_pipeline.lib.billing.sources import lazy_content_ids, with_content_ids

    rows = gcp_rows(DAY, 23, seed=16) + gcp_rows(DAY + dt.timedelta(days=1), 9, seed=17) + gcp_rows(DAY, 2, seed=16)
    rows[4]["labels"] = [{"key": "ml-team", "value": 'a "quoted"\n\\team'}, {"key": "ML_Team", "value": "<b>x</b>"}]
    rows[5]["labels"] = [{"key": "ml_project", "value": "resource-wins"}]
    rows[6]["credits"] = [{"name": n, "amount": a, "type": "PROMOTION", "id": "", "full_name": ""} for n, a in (("a", -0.1), ("b", -0.2), ("c", -1e-06))]
    path = tmp_path / "export" / "billing-000.parquet"
    _typed_parquet(rows, path)
    gcp = source("gcp_billing_export", name="gcp")
    whole = with_content_ids(read_gcp_file(path, str(path), path.name, gcp))
    pages_before = sorted(spill.ROOT.glob("*/pages.json")) if spill.ROOT.exists() else []
    scanned = lazy_content_ids(scan_gcp_file(path, str(path), path.name, gcp, page_rows=5)).collect()
    assert (sorted(spill.ROOT.glob("*/pages.json")) if spill.ROOT.exists() else []) == pages_before  # not paged
    assert scanned.equals(whole) and scanned.height == 34
    assert list(scanned["tags"][4].items()) == [("ml-team", 'a "quoted"\n\\team'), ("ML_Team", "<b>x</b>")] + [
        (e["key"], e["value"]) for e in rows[4]["project"]["labels"] if e["key"] != "ml-team"]  # both resource spellings stay
    tags5 = scanned["tags"][5]
    assert tags5["ml_project"] == "resource-wins" and "ml-project" not in tags5  # the project's ml-project is hidden
    assert scanned["line_item_id"].str.ends_with("-1").sum() == 2  # the two repeated rows told apart

    maps: list[pl.DataFrame] = []
    hashed = scan_gcp_file(path, str(path), path.name, gcp, days=[DAY], maps=maps).collect()
    day_whole = whole.filter(pl.col("date") == DAY)
    assert hashed.height == day_whole.height == 25 and hashed["tags"].null_count() == 25
    assert hashed["tag_set"].to_list() == day_whole.select(tag_set_hash()).to_series().to_list()
    assert hashed["_check"].to_list() == day_whole.select(tag_set_hash(seed=2)).to_series().to_list()
    known = pl.concat(maps)
    assert set(known["tag_set"]) == set(hashed["tag_set"])

    day = read_day("gcp_billing_export", str(tmp_path / "export"), DAY, "gcp")  # the reader flow and the ingest agree
    billed, effective = _expected(rows[:23] + rows[32:])
    assert (day.height, day["billed_cost"].sum(), day["effective_cost"].sum()) == (25, billed, effective)
    assert single_day(path) is None  # two days
    _typed_parquet(rows[:23], tmp_path / "one" / "billing.parquet")
    assert single_day(tmp_path / "one" / "billing.parquet") == DAY and single_day(write_jsonl(tmp_path / "a.jsonl", rows[:3])) == DAY
    assert single_day(write_jsonl(tmp_path / "b.jsonl", rows)) is None  # a JSONL extract: from its typed copy


def test_each_line_of_a_typed_export_keeps_its_own_labels_when_row_groups_of_other_days_are_skipped(tmp_path):
    """The lines' label pairs come from the first pass's key per line, in the order of the day's rows:
    with the file's row groups of other days skipped (three days, four lines a group, every line's labels
    its own), each day read alone gives each line the tags a whole read gives it, in the same order."""
    from cost_pipeline.lib.billing.fingerprint import tag_set_hash
    from cost_pipeline.lib.billing.gcp import scan_gcp_file
    from cost_pipeline.lib.billing.sources import with_content_ids

    days = [DAY + dt.timedelta(days=k) for k in range(3)]
    rows = [row for k, day in enumerate(days) for row in gcp_rows(day, 10, seed=40 + k)]
    for i, row in enumerate(rows):
        row["labels"] = [{"key": "ml-team", "value": f"team-{i}"}, {"key": "line", "value": f'"{i}"\n<{i}>'}]
    path = tmp_path / "export" / "billing-000.parquet"
    _typed_parquet(rows, path)
    pl.read_parquet(path).sort("usage_start_time", maintain_order=True).write_parquet(path, row_group_size=4)
    gcp = source("gcp_billing_export", name="gcp")
    whole = with_content_ids(read_gcp_file(path, str(path), path.name, gcp))
    for day in (days[1], days[2], days[0]):
        expected = whole.filter(pl.col("date") == day)
        lines = scan_gcp_file(path, str(path), path.name, gcp, days=[day]).filter(pl.col("date") == day).collect()
        assert lines.height == expected.height == 10
        assert lines["tags"].to_list() == expected["tags"].to_list()
        assert {t["ml-team"] for t in lines["tags"]} == {f"team-{i}" for i, r in enumerate(rows) if r["usage_start_time"].startswith(str(day))}
        hashed = scan_gcp_file(path, str(path), path.name, gcp, days=[day], maps=[]).filter(pl.col("date") == day).collect()
        assert hashed["tag_set"].to_list() == expected.select(tag_set_hash()).to_series().to_list()


def test_a_typed_parquet_export_with_a_line_without_usage_start_names_the_file_and_record(tmp_path):
    rows = gcp_rows(DAY, 12, seed=18)
    path = tmp_path / "export" / "billing-000.parquet"
    _typed_parquet(rows, path)
    pl.read_parquet(path).with_columns(pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("usage_start_time")).alias("usage_start_time")).write_parquet(path)
    with pytest.raises(InputError, match="record 8: the line has no usage start date") as err:
        read_day("gcp_billing_export", str(tmp_path / "export"), DAY, "gcp")
    assert str(path) in str(err.value)


def test_a_jsonl_extract_is_read_through_a_typed_copy_without_pages_with_the_lines_ids_and_tag_sets_of_a_whole_read(tmp_path):
    """PyArrow's JSON reader parses a JSONL extract (plain or gzipped) once into a typed Parquet copy,
    read like a Parquet extract: no pages, a whole read's lines, ids and tags (integer amounts, unread
    fields, hostile labels); a file the copy cannot hold exactly still goes through its pages."""
    import gzip

    from cost_pipeline.lib.billing import spill
    from cost_pipeline.lib.billing.gcp import REQUIRED, scan_gcp_file
    from cost_pipeline.lib.billing.gcp_json import typed_copy
    from cost_pipeline.lib.billing.sources import lazy_content_ids, with_content_ids

    rows = gcp_rows(DAY, 23, seed=21) + gcp_rows(DAY + dt.timedelta(days=1), 9, seed=22) + gcp_rows(DAY, 2, seed=21)
    rows[3]["cost"], rows[3]["cost_at_list"] = 2, 3  # JSON integers
    rows[4]["labels"] = [{"key": "ml-team", "value": 'a "quoted"\n\\team'}, {"key": "ML_Team", "value": "<b>x</b>"}]
    rows[5]["system_labels"] = [{"key": "compute.googleapis.com/machine_spec", "value": "n1"}]  # not read
    gcp = source("gcp_billing_export", name="gcp")
    plain = write_jsonl(tmp_path / "export" / "billing-000.jsonl", rows)
    packed = tmp_path / "packed" / "billing-000.jsonl.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    pages = lambda: sorted(spill.ROOT.glob("*/pages.json")) if spill.ROOT.exists() else []  # noqa: E731
    for path in (plain, packed):
        whole = with_content_ids(read_gcp_file(path, str(path), path.name, gcp))
        before = pages()
        assert typed_copy(path, REQUIRED) is not None
        scanned = lazy_content_ids(scan_gcp_file(path, str(path), path.name, gcp, page_rows=5)).collect()
        assert pages() == before  # not paged
        assert scanned.equals(whole) and scanned.height == 34
        billed, effective = _expected(rows)
        assert (scanned["billed_cost"].sum(), scanned["effective_cost"].sum()) == (billed, effective)
        assert scanned["billed_cost"][3] == Decimal(2) and scanned["list_cost"][3] == Decimal(3)
        assert scanned["line_item_id"].str.ends_with("-1").sum() == 2
        assert list(scanned["tags"][4].items())[:2] == [("ml-team", 'a "quoted"\n\\team'), ("ML_Team", "<b>x</b>")]
    day = read_day("gcp_billing_export", str(tmp_path / "packed"), DAY, "gcp")  # the reader flow and the ingest agree
    assert (day.height, day["billed_cost"].sum()) == (25, _expected(rows[:23] + rows[32:])[0])

    as_text = [dict(r, cost=repr(r["cost"])) if i == 7 else r for i, r in enumerate(rows)]  # a cost given as text
    no_type = [{k: v for k, v in r.items() if k != "cost_type"} for r in rows]  # read as "regular"; null would be no type
    for odd in (as_text, no_type):
        path = write_jsonl(tmp_path / "odd" / "billing.jsonl", odd)
        assert typed_copy(path, REQUIRED) is None
        scanned = lazy_content_ids(scan_gcp_file(path, str(path), path.name, gcp)).collect()
        assert scanned.height == 34 and scanned.equals(with_content_ids(read_gcp_file(path, str(path), path.name, gcp)))
    assert set(read_gcp_file(path, str(path), path.name, gcp)["charge_type"]) == {"regular"}
    broken = write_jsonl(tmp_path / "broken" / "billing.jsonl", rows)
    broken.write_text(broken.read_text() + "not json\n")  # a line that is no JSON object: no copy, the file named
    assert typed_copy(broken, REQUIRED) is None
    with pytest.raises(InputError, match="cannot read GCP billing export file") as err:
        scan_gcp_file(broken, str(broken), broken.name, gcp)
    assert str(broken) in str(err.value)


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_the_days_of_a_typed_extract_holding_several_are_read_from_its_usage_starts_alone(tmp_path, kind):
    """A file holding several days is read for its days once; a typed one (a Parquet extract, a JSONL
    extract's typed copy) from its usage starts alone, without the typed read's first pass (every
    line's label pairs): the days, then each day's lines, as a whole read has them."""
    from cost_pipeline.lib.billing import gcp
    from cost_pipeline.lib.billing.sources import current_deliveries, file_days

    rows = gcp_rows(DAY, 14, seed=31) + gcp_rows(DAY + dt.timedelta(days=2), 6, seed=32)
    path = tmp_path / "export" / f"billing.{kind}"
    _typed_parquet(rows, path) if kind == "parquet" else write_jsonl(path, rows)
    gcp_source, storage = source("gcp_billing_export", str(tmp_path / "export"), "gcp"), Storage()
    (file,) = [f for d in current_deliveries(gcp_source, storage) for f in d.files]
    gcp._first_pass.cache_clear()
    assert file_days(gcp_source, file, storage) == {DAY, DAY + dt.timedelta(days=2)}
    assert gcp._first_pass.cache_info().misses == 0  # no label pairs read for the days
    for day, expected in ((DAY, rows[:14]), (DAY + dt.timedelta(days=2), rows[14:])):
        lines = read_day("gcp_billing_export", str(tmp_path / "export"), day, "gcp")
        assert (lines.height, lines["billed_cost"].sum(), lines["effective_cost"].sum()) == (len(expected), *_expected(expected))


def test_jsonl_pages_come_from_pyarrow_and_from_polars_where_a_later_blocks_types_differ(tmp_path):
    """A JSONL extract the typed copy refuses (no ``cost_type`` column) is paged from PyArrow's streaming
    reader, which infers types from the first block; where a later block's differ (integer costs, then a
    fraction) the pages come from Polars' reader: either way a whole read's lines and totals."""
    import pyarrow as pa
    import pyarrow.json as pj

    from cost_pipeline.lib.billing.gcp import REQUIRED, scan_gcp_file
    from cost_pipeline.lib.billing.gcp_json import typed_copy
    from cost_pipeline.lib.billing.sources import lazy_content_ids, with_content_ids

    gcp = source("gcp_billing_export", name="gcp")
    rows = [{k: v for k, v in r.items() if k != "cost_type"} for r in gcp_rows(DAY, 2000, seed=41)]
    for r in rows[:1800]:
        r["cost"] = int(r["cost"] * 1000)  # integers for the first ~1.4 MB: PyArrow's first block
    for name, odd in (("same", rows[:1800]), ("differ", rows)):
        path = write_jsonl(tmp_path / name / "billing.jsonl", odd)
        assert path.stat().st_size > 1 << 20 and typed_copy(path, REQUIRED) is None
        if name == "differ":
            with pytest.raises(pa.ArrowInvalid):
                pj.open_json(path).read_all()
        whole = with_content_ids(read_gcp_file(path, str(path), path.name, gcp))
        paged = lazy_content_ids(scan_gcp_file(path, str(path), path.name, gcp, page_rows=700)).collect()
        assert paged.equals(whole) and paged.height == len(odd) and set(paged["charge_type"]) == {"regular"}
        assert paged["billed_cost"].sum() == _expected(odd)[0]


def test_a_large_jsonl_extract_pyarrow_cannot_parse_past_its_first_block_is_refused_once_and_named(tmp_path):
    import json

    from cost_pipeline.lib.billing.gcp import REQUIRED
    from cost_pipeline.lib.billing.gcp_json import CONTEXT, typed_copy
    from cost_pipeline.lib.billing.spill import folder_for

    path = write_jsonl(tmp_path / "export" / "billing.jsonl", gcp_rows(DAY, 3000, seed=51))
    path.write_text(path.read_text() + "not json\n")
    assert path.stat().st_size > 2 << 20
    assert typed_copy(path, REQUIRED) is None
    assert json.loads((folder_for(path, CONTEXT) / "checked.json").read_text())["clean"] is False  # kept: not parsed again
    with pytest.raises(InputError, match="cannot read GCP billing export file") as err:
        read_day("gcp_billing_export", str(tmp_path / "export"), DAY, "gcp")
    assert str(path) in str(err.value)
