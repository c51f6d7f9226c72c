"""Reading CUR 2.0 as delivered, including the ways a delivery can be broken."""

import datetime as dt
import shutil
from decimal import Decimal

import polars as pl
import pyarrow.parquet as pq
import pytest

from cost_pipeline.lib.errors import InputError
from cost_pipeline_tests.conftest import START, cur2_effective, read_day

DAY = START + dt.timedelta(days=1)


def _raw_day(billing, day):
    """Independent oracle: sum the raw file with pyarrow, applying the amortization rules by hand."""
    table = pq.read_table(billing / "data" / f"BILLING_PERIOD={day:%Y-%m}").to_pylist()
    billed = effective = Decimal(0)
    rows = 0
    for r in table:
        if r["line_item_usage_start_date"].date() != day:
            continue
        rows += 1
        billed += Decimal(repr(r["line_item_unblended_cost"]))
        effective += cur2_effective(r)
    return rows, billed, effective


def test_day_totals_match_an_independent_sum(sample_dir):
    billing = sample_dir / "billing" / "aws"
    lines = read_day("aws_cur2", str(billing), DAY, "aws-main")
    rows, billed, effective = _raw_day(billing, DAY)
    assert lines.height == rows
    assert lines["billed_cost"].sum() == billed
    assert lines["effective_cost"].sum() == effective
    assert lines["date"].unique().to_list() == [DAY]
    assert set(lines["charge_type"]) == {"Usage", "SavingsPlanCoveredUsage", "SavingsPlanNegation", "SavingsPlanRecurringFee"}
    assert isinstance(lines.schema["tags"], pl.Map)


def test_a_missing_or_empty_source_path_is_an_error_not_an_empty_day(tmp_path):
    with pytest.raises(InputError, match="does not exist or holds no files"):
        read_day("aws_cur2", str(tmp_path / "nowhere"), DAY, "x")
    (tmp_path / "data" / "BILLING_PERIOD=2026-09").mkdir(parents=True)
    (tmp_path / "data" / "BILLING_PERIOD=2026-09" / "README.txt").write_text("not data")
    with pytest.raises(InputError, match="no aws_cur2 data files"):
        read_day("aws_cur2", str(tmp_path), DAY, "x")


@pytest.fixture
def billing_copy(tmp_path, sample_dir):
    dest = tmp_path / "aws"
    shutil.copytree(sample_dir / "billing" / "aws", dest)
    return dest


def _file_of(billing, day):
    return billing / "data" / f"BILLING_PERIOD={day:%Y-%m}" / f"acme-ml-cur2-{day.day:05d}.snappy.parquet"


def test_missing_required_column_names_file_and_column(billing_copy):
    path = _file_of(billing_copy, DAY)
    pq.write_table(pq.read_table(path).drop(["line_item_unblended_cost"]), path)
    with pytest.raises(InputError) as err:
        read_day("aws_cur2", str(billing_copy), DAY, "aws-main")
    assert str(path) in str(err.value) and "line_item_unblended_cost" in str(err.value)


def test_truncated_parquet_names_the_file(billing_copy):
    path = _file_of(billing_copy, DAY)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable Parquet file") as err:
        read_day("aws_cur2", str(billing_copy), DAY, "aws-main")
    assert str(path) in str(err.value)


def test_wrong_type_names_the_column(billing_copy):
    path = _file_of(billing_copy, DAY)
    table = pq.read_table(path)
    i = table.schema.get_field_index("resource_tags")
    table = table.set_column(i, "resource_tags", table["line_item_usage_type"])
    pq.write_table(table, path)
    with pytest.raises(InputError, match="resource_tags has type"):
        read_day("aws_cur2", str(billing_copy), DAY, "aws-main")


def test_unparseable_string_amount_names_the_file(billing_copy):
    path = _file_of(billing_copy, DAY)
    table = pq.read_table(path)
    i = table.schema.get_field_index("line_item_unblended_cost")
    values = [str(v) for v in table["line_item_unblended_cost"].to_pylist()]
    values[0] = "12,5 EUR"
    import pyarrow as pa

    pq.write_table(table.set_column(i, "line_item_unblended_cost", pa.array(values)), path)
    with pytest.raises(InputError, match="cannot read billing data") as err:
        read_day("aws_cur2", str(billing_copy), DAY, "aws-main")
    assert str(path) in str(err.value)


def test_the_per_file_columns_are_plain_strings_for_every_reader(tmp_path, sample_dir):
    """The ingest sinks provider, source, billing_period and source_file (one value per billing file) as
    Categoricals under the schema of strings (lib/billing/write_day.py): Polars, PyArrow and DuckDB all
    read strings, each line with its own file's name, in a day written alone and in a batch of days."""
    import duckdb
    import pyarrow as pa

    from cost_pipeline.lib.billing.write_day import PER_FILE, ingest_days
    from cost_pipeline.lib.storage import Storage
    from cost_pipeline_tests.conftest import source

    days = [START, START + dt.timedelta(days=1)]
    raw = {path.name: pl.read_parquet(path) for path in sorted((sample_dir / "billing" / "aws").rglob("*.parquet"))}
    for batch in ([days[0]], days):  # a plain sink, and a partitioned one
        paths = {day: tmp_path / f"{len(batch)}-{day}.parquet" for day in batch}
        ingest_days([source("aws_cur2", sample_dir / "billing" / "aws", name="aws-main")], batch, lambda _: Storage(), paths)
        for day, path in paths.items():
            assert [pq.read_schema(path).field(c).type for c in PER_FILE] == [pa.large_string()] * 4
            assert [t for c, t, *_ in duckdb.sql(f"describe select {', '.join(PER_FILE)} from '{path}'").fetchall()] == ["VARCHAR"] * 4
            written = pl.read_parquet(path)
            assert [written.schema[c] for c in PER_FILE] == [pl.String] * 4
            assert set(written["provider"]) == {"aws"} and set(written["source"]) == {"aws-main"} and set(written["billing_period"]) == {"2026-09"}
            # by hand: each delivered file's lines of the day, counted under its own name
            per_file = {name: frame.filter(pl.col("line_item_usage_start_date").dt.date() == day).height for name, frame in raw.items()}
            counted = dict(written.group_by(pl.col("source_file").str.split("/").list.last()).len().iter_rows())
            assert counted == {name: n for name, n in per_file.items() if n} and sum(counted.values()) > 300
