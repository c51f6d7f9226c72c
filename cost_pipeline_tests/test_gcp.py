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
