"""Effective (amortized) cost of AWS line items, by line item type.

These are the rules AWS's Cloud Intelligence Dashboards use to amortize commitments
(cid-framework "amortized cost" definition), so totals match what FinOps teams see there:
usage covered by a Savings Plan or a reservation costs its effective rate, the negation and upfront
lines that would count it twice cost nothing, and only the *unused* part of a commitment's fee is
a cost of its own. Everything else (Usage, Tax, Credit, Refund, discounts) keeps its unblended cost.
"""

from __future__ import annotations

import polars as pl

from cost_pipeline.lib.exprs import lookup
from cost_pipeline.lib.money import MONEY, zero

# Columns the rules read, beyond the unblended cost.
AMORTIZATION_COLUMNS = [
    "savings_plan_savings_plan_effective_cost",
    "savings_plan_total_commitment_to_date",
    "savings_plan_used_commitment",
    "reservation_effective_cost",
    "reservation_unused_amortized_upfront_fee_for_billing_period",
    "reservation_unused_recurring_fee",
    "reservation_reservation_a_r_n",
]

# FOCUS ChargeCategory for each CUR line item type (FOCUS 1.x: Usage, Purchase, Tax, Credit, Adjustment).
CHARGE_CATEGORY = {
    "Usage": "Usage",
    "DiscountedUsage": "Usage",
    "SavingsPlanCoveredUsage": "Usage",
    "SavingsPlanNegation": "Usage",
    "SavingsPlanUpfrontFee": "Purchase",
    "SavingsPlanRecurringFee": "Purchase",
    "RIFee": "Purchase",
    "Fee": "Purchase",
    "Tax": "Tax",
    "Credit": "Credit",
    "Refund": "Credit",
    "BundledDiscount": "Adjustment",
    "EdpDiscount": "Adjustment",
    "PrivateRateDiscount": "Adjustment",
    "DistributorDiscount": "Adjustment",
}


def _money(name: str) -> pl.Expr:
    return pl.col(name).cast(MONEY).fill_null(zero())


def effective_cost(line_type: str = "line_item_line_item_type") -> pl.Expr:
    """Amortized cost of one CUR line (CUR 2.0 and legacy CUR Parquet column names)."""
    kind = pl.col(line_type)
    is_reservation_fee = (kind == "Fee") & (pl.col("reservation_reservation_a_r_n").fill_null("") != "")
    return (
        pl.when(kind == "SavingsPlanCoveredUsage")
        .then(pl.col("savings_plan_savings_plan_effective_cost").cast(MONEY))
        .when(kind == "DiscountedUsage")
        .then(pl.col("reservation_effective_cost").cast(MONEY))
        .when(kind.is_in(["SavingsPlanNegation", "SavingsPlanUpfrontFee"]) | is_reservation_fee)
        .then(zero())
        .when(kind == "RIFee")
        .then(
            _money("reservation_unused_amortized_upfront_fee_for_billing_period")
            + _money("reservation_unused_recurring_fee")
        )
        .when(kind == "SavingsPlanRecurringFee")
        .then(_money("savings_plan_total_commitment_to_date") - _money("savings_plan_used_commitment"))
        .otherwise(pl.col("line_item_unblended_cost").cast(MONEY))
    )


def charge_category(line_type: str = "line_item_line_item_type") -> pl.Expr:
    return lookup(pl.col(line_type), CHARGE_CATEGORY, default="Adjustment")
