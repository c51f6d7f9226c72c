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
    quarantined = quarantine(_tagged(sample_dir))
    top = top_untagged_resources(quarantined, n=5)
    amounts = top["amount"].to_list()
    assert len(amounts) == 5 and amounts == sorted(amounts, reverse=True)
    # by hand: each resource's spend, lines and most frequent reason (ties: first by name)
    spend, reasons = {}, {}
    for r in quarantined.select("resource_id", "account_id", "service", "currency", "reason", "amount").iter_rows(named=True):
        key = (r["resource_id"], r["account_id"], r["service"], r["currency"])
        spend[key] = spend.get(key, 0) + r["amount"]
        reasons.setdefault(key, {}).setdefault(r["reason"], 0)
        reasons[key][r["reason"]] += 1
    ranked = sorted(spend, key=lambda k: (-spend[k], k[0]))[:5]
    want = [(*k, spend[k], min(reasons[k], key=lambda x: (-reasons[k][x], x)), sum(reasons[k].values())) for k in ranked]
    assert top.select("resource_id", "account_id", "service", "currency", "amount", "reason", "lines").rows() == want
    assert top_untagged_resources(quarantined.lazy(), n=5).collect(engine="streaming").equals(top)  # the summary streams it


def test_markdown_escapes_hostile_text():
    cell = md_text("<script>alert(1)</script>|[x](http://evil)")
    assert "<" not in cell.replace("\\<", "") and "|" not in cell.replace("\\|", "")
    assert md_text("a" * 500).endswith("…") and len(md_text("a" * 500)) == 120
    assert md_text("nul\x00byte") == "nul\ufffdbyte"
    table = md_table(["resource"], [["x|y"]])
    assert table.splitlines()[2] == "| x\\|y |"
