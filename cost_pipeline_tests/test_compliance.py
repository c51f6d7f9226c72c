"""Compliance metrics over the generated organisation, and escaping of untrusted text."""


import polars as pl

from cost_pipeline.config import bundled_config_path, load_settings
from cost_pipeline.lib.compliance import (
    compliance_breakdown,
    compliance_summary,
    top_untagged_resources,
    untagged_shares,
)
from cost_pipeline.lib.markdown import md_table, md_text
from cost_pipeline.lib.tags import apply_tag_schema, quarantine
from cost_pipeline_tests.conftest import START, read_day

DEMO = load_settings(bundled_config_path()).tagging


def _tagged(sample_dir):
    return apply_tag_schema(read_day("aws_cur2", str(sample_dir / "billing" / "aws"), START, "aws-main"), DEMO)


def test_each_dimension_partitions_the_day_exactly(sample_dir):
    tagged = _tagged(sample_dir)
    day_total = tagged["effective_cost"].sum()
    untagged_total = quarantine(tagged)["amount"].sum()
    table = compliance_breakdown(compliance_summary(tagged))
    for dimension in ["account", "service", "team", "reason"]:
        rows = table.filter(pl.col("dimension") == dimension)
        assert rows["total"].sum() == day_total
        assert rows["untagged"].sum() == untagged_total
        assert (rows["compliant"] + rows["untagged"] == rows["total"]).all()
    reasons = table.filter(pl.col("dimension") == "reason")
    assert reasons.filter(pl.col("value") == "compliant")["untagged"].sum() == 0
    share = untagged_shares(compliance_summary(tagged))["share"][0]
    assert share == float(untagged_total) / float(day_total) and 0.02 < share < 0.2


def test_top_untagged_resources_are_ordered_by_spend(sample_dir):
    top = top_untagged_resources(quarantine(_tagged(sample_dir)), n=5)
    amounts = top["amount"].to_list()
    assert len(amounts) == 5 and amounts == sorted(amounts, reverse=True)


def test_markdown_escapes_hostile_text():
    cell = md_text("<script>alert(1)</script>|[x](http://evil)")
    assert "<" not in cell.replace("\\<", "") and "|" not in cell.replace("\\|", "")
    assert md_text("a" * 500).endswith("…") and len(md_text("a" * 500)) == 120
    assert md_text("nul\x00byte") == "nul\ufffdbyte"
    table = md_table(["resource"], [["x|y"]])
    assert table.splitlines()[2] == "| x\\|y |"
