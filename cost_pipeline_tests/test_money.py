from decimal import Decimal as D

from cost_pipeline.lib.money import largest_remainder


def test_largest_remainder_adds_up_to_the_rounded_total():
    parts = [D("0.333333"), D("0.333333"), D("0.333334")]
    assert largest_remainder(parts) == [D("0.33"), D("0.33"), D("0.34")]
    assert sum(largest_remainder(parts)) == D("1.00")


def test_largest_remainder_is_deterministic_on_ties_and_handles_negatives():
    assert largest_remainder([D("0.005"), D("0.005")]) == [D("0.01"), D("0.00")]
    parts = [D("-1.004"), D("2.006"), D("0.333")]
    rounded = largest_remainder(parts)
    assert sum(rounded) == D("1.34")
    assert rounded == [D("-1.00"), D("2.01"), D("0.33")]
