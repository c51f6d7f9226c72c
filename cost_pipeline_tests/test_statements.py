"""Chargeback statements through the CLI: they add up to the bill, close, and carry later changes as adjustments.

The pipeline runs over generated CUR 2.0 for all of October and two November days; the oracle is the
raw delivered Parquet, summed with the amortization rules by hand.
"""

import csv
import datetime as dt
import io
import shutil
from decimal import Decimal
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from cost_pipeline_tests.conftest import cli, cur2_effective

CHANGED_DAY = dt.date(2026, 10, 5)


def copy_of(october: Path, tmp_path: Path) -> Path:
    shutil.copytree(october, tmp_path, dirs_exist_ok=True)
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    raw["lake_uri"] = str(tmp_path / "lake")
    raw["billing_sources"][0]["uri"] = str(tmp_path / "data" / "billing" / "aws")
    raw["usage"]["extracts_uri"] = str(tmp_path / "data" / "usage")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "config.yaml"


def raw_effective(billing: Path, month: str) -> Decimal:
    """Oracle: the month's effective cost from the delivered files, by the contract's rules, by hand."""
    rows = pq.read_table(billing / "data").to_pylist()
    return sum((cur2_effective(r) for r in rows if r["line_item_usage_start_date"].strftime("%Y-%m") == month), Decimal(0))


def read_statements(lake: Path, month: str) -> dict[str, list[dict]]:
    folder = lake / "reports" / "statements" / month
    return {p.stem: list(csv.DictReader(io.StringIO(p.read_text()))) for p in sorted(folder.glob("*.csv"))}


def statement_total(rows: list[dict]) -> Decimal:
    return sum((Decimal(r["amount"]) for r in rows if r["line_type"] == "total"), Decimal(0))


def test_every_statement_adds_up_and_october_equals_the_bill(october):
    statements = read_statements(october / "lake", "2026-10")
    assert {"unattributed", "fraud-detection", "platform"} <= set(statements)
    for team, rows in statements.items():
        lines = [Decimal(r["amount"]) for r in rows if r["line_type"] != "total"]
        assert len(lines) > 1 and sum(lines, Decimal(0)) == statement_total(rows), team
        assert {r["team"] for r in rows} == {"__unattributed__" if team == "unattributed" else team}
    bill = raw_effective(october / "data" / "billing" / "aws", "2026-10")
    assert sum(statement_total(rows) for rows in statements.values()) == bill.quantize(Decimal("0.01"))
    shared = [r for r in statements["fraud-detection"] if r["line_type"] == "shared"]
    assert shared and all(r["pool"] and r["driver"] for r in shared)


def test_team_csv_parts_add_up_to_each_row_total(october):
    files = sorted((october / "lake" / "reports" / "teams").glob("*.csv"))
    assert len(files) == 6
    for path in files:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        assert rows
        for r in rows:
            assert Decimal(r["direct"]) + Decimal(r["shared"]) + Decimal(r["unattributed"]) == Decimal(r["total"]), (path.name, r)


def test_a_closed_month_stays_byte_identical_and_changes_land_on_the_next_open_month(october, tmp_path):
    config = copy_of(october, tmp_path)
    lake = tmp_path / "lake"
    closed = cli("close-month", "2026-10", "--config", str(config))
    assert closed.returncode == 0, closed.stderr
    assert "closed 2026-10" in closed.stdout
    october_files = {p: p.read_bytes() for p in (lake / "reports" / "statements" / "2026-10").iterdir()}
    assert "Closed 20" in (lake / "reports" / "statements" / "2026-10" / "platform.html").read_text()

    again = cli("close-month", "2026-10", "--config", str(config))
    assert again.returncode == 2 and "never rewritten" in again.stderr

    # AWS re-delivers October with one fraud-detection usage line 10.00 dearer
    billing = tmp_path / "data" / "billing" / "aws"
    path = next(p for p in sorted((billing / "data" / "BILLING_PERIOD=2026-10").glob("*.parquet")) if p.name.endswith(f"{CHANGED_DAY.day:05d}.snappy.parquet"))
    table = pq.read_table(path)
    rows = table.to_pylist()
    target = next(i for i, r in enumerate(rows) if r["line_item_line_item_type"] == "Usage" and r["line_item_usage_account_id"] == "210000000001")
    costs = table["line_item_unblended_cost"].to_pylist()
    costs[target] += 10.0
    delta = Decimal(repr(costs[target])) - Decimal(repr(rows[target]["line_item_unblended_cost"]))
    table = table.set_column(table.schema.get_field_index("line_item_unblended_cost"), "line_item_unblended_cost", pc.cast(costs, table.schema.field("line_item_unblended_cost").type))
    pq.write_table(table, path)

    rerun = cli("run", "--config", str(config), "--start", CHANGED_DAY.isoformat(), "--end", CHANGED_DAY.isoformat())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert {p: p.read_bytes() for p in (lake / "reports" / "statements" / "2026-10").iterdir()} == october_files

    november = read_statements(lake, "2026-11")
    adjustments = [r for rows in november.values() for r in rows if r["line_type"] == "adjustment"]
    assert adjustments and sum(Decimal(r["amount"]) for r in adjustments) == delta
    assert {r["ref_month"] for r in adjustments} == {"2026-10"}
    assert all("restatement of the 2026-10 bill" in r["why"] for r in adjustments)
    assert {r["team"] for r in adjustments} <= {"fraud-detection", "__unattributed__"}
    for team, rows in november.items():
        assert sum((Decimal(r["amount"]) for r in rows if r["line_type"] != "total"), Decimal(0)) == statement_total(rows), team
    # November's statements: its own bill plus the adjustment, to the cent
    bill = raw_effective(billing, "2026-11")
    assert sum(statement_total(rows) for rows in november.values()) == (bill + delta).quantize(Decimal("0.01"))


def test_closing_needs_every_day_of_the_month(october, tmp_path):
    config = copy_of(october, tmp_path)
    shutil.rmtree(tmp_path / "lake" / "team_cost_detail" / "date=2026-10-17")
    refused = cli("close-month", "2026-10", "--config", str(config))
    assert refused.returncode == 2
    assert "lacks 1 day(s)" in refused.stderr and "2026-10-17" in refused.stderr
    assert not (tmp_path / "lake" / "closed_statements").exists()
    bad = cli("close-month", "October", "--config", str(config))
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr


def test_the_close_month_job_closes_once(october, tmp_path):
    import dagster as dg

    from cost_pipeline.config import load_settings
    from cost_pipeline.definitions import build_defs
    from cost_pipeline.defs.resources import resources_for

    config = copy_of(october, tmp_path)
    job = build_defs(load_settings(config)).resolve_job_def("close_month_job")
    run = {"ops": {"close_month_op": {"config": {"month": "2026-10"}}}}
    resources = resources_for(load_settings(config))
    assert job.execute_in_process(run_config=run, resources=resources, instance=dg.DagsterInstance.ephemeral()).success
    index = (tmp_path / "lake" / "closed_statements" / "index.json").read_text()
    assert '"2026-10"' in index
    with pytest.raises(Exception, match="never rewritten"):
        job.execute_in_process(run_config=run, resources=resources, instance=dg.DagsterInstance.ephemeral())


def test_a_pool_whose_credits_cancel_its_charges_has_no_share():
    import datetime as dt

    import polars as pl

    from cost_pipeline.lib.report_tables import pool_shares

    detail = pl.DataFrame({"date": [dt.date(2026, 10, 1)] * 2, "team": ["a", "b"], "project": [None, None], "pool": ["p", "p"],
                           "currency": ["USD"] * 2, "amount": [Decimal("5"), Decimal("-5")]},
                          schema_overrides={"amount": pl.Decimal(38, 12), "project": pl.String})
    shares = pool_shares(detail, [])
    assert shares["share"].to_list() == [None, None]
    assert shares["amount_cents"].sum() == 0 and sorted(shares["amount_cents"].to_list()) == [Decimal("-5.00"), Decimal("5.00")]


def test_untagged_by_account_sums_months_across_days_by_hand():
    """Quarantined lines of several days of two months, summed per month, account and reason (the lines
    are summed per day first): amounts, line counts and cents checked against sums done by hand."""
    import polars as pl

    from cost_pipeline.config import TaggingConfig
    from cost_pipeline.lib.money import MONEY
    from cost_pipeline.lib.report_tables import untagged_by_account

    rows = [  # date, account, reason, amount
        (dt.date(2026, 9, 29), "111", "missing:ml-team", "1.005"), (dt.date(2026, 9, 30), "111", "missing:ml-team", "2.001"),
        (dt.date(2026, 9, 30), "111", "missing:ml-team", "0.333"), (dt.date(2026, 10, 1), "111", "missing:ml-team", "5"),
        (dt.date(2026, 9, 30), "222", "unknown_team", "-1.25"), (dt.date(2026, 9, 30), "111", "unknown_team", "0.5"),
    ]
    lines = pl.DataFrame({"date": [r[0] for r in rows], "account_id": [r[1] for r in rows], "reason": [r[2] for r in rows],
                          "amount": [Decimal(r[3]) for r in rows], "currency": ["USD"] * len(rows)}).with_columns(pl.col("amount").cast(MONEY))
    out = untagged_by_account(lines.lazy(), TaggingConfig())
    got = {(r["month"], r["account_id"], r["reason"]): (r["amount"], r["lines"]) for r in out.iter_rows(named=True)}
    assert got == {
        ("2026-09", "111", "missing:ml-team"): (Decimal("3.339"), 3), ("2026-10", "111", "missing:ml-team"): (Decimal("5"), 1),
        ("2026-09", "222", "unknown_team"): (Decimal("-1.25"), 1), ("2026-09", "111", "unknown_team"): (Decimal("0.5"), 1),
    }
    # cents rounded once per month and currency: September's 3.339 - 1.25 + 0.5 = 2.589 -> 2.59 in all
    assert out.filter(pl.col("month") == "2026-09")["amount_cents"].sum() == Decimal("2.59")
