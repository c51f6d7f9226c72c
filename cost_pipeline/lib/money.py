"""Money arithmetic: exact decimals in the lake, cents only at presentation.

Costs are stored as Decimal(38, 12) (CUR carries up to 10 decimal places, FOCUS files up to 11), so day totals and
allocations add up exactly. Rounding to cents happens once, when showing numbers to people, with
largest-remainder rounding so that the rounded parts still add up to the rounded whole.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import polars as pl

MONEY = pl.Decimal(38, 12)
SCALE = 12
CENT = Decimal("0.01")


def zero() -> pl.Expr:
    return pl.lit(0).cast(MONEY)


def round_cents(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_EVEN)


def largest_remainder(amounts: list[Decimal], unit: Decimal = CENT, total: Decimal | None = None) -> list[Decimal]:
    """Round each amount to ``unit`` so the results add up to the rounded total.

    Each part is floored to the unit; the units left over go to the parts with the largest
    remainders (ties to the earlier part, so the result is deterministic). Works for negative
    amounts too, by flooring towards minus infinity. ``total``: the already rounded whole the parts
    must add up to, when this is one level of a hierarchy (a team's lines to the team's total).
    """
    if not amounts:
        return []
    units = [Decimal(a) / unit for a in amounts]
    floors = [u.to_integral_value(rounding="ROUND_FLOOR") for u in units]
    if total is None:
        target = (sum(units, Decimal(0))).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    else:
        target = (Decimal(total) / unit).to_integral_value(rounding=ROUND_HALF_EVEN)
    leftover = int(target - sum(floors, Decimal(0)))
    if not 0 <= leftover <= len(units):
        raise ValueError(f"cannot round {len(units)} parts to a total {total} that is more than one unit per part away")
    order = sorted(range(len(units)), key=lambda i: (-(units[i] - floors[i]), i))
    result = list(floors)
    for i in order[:leftover]:
        result[i] += 1
    return [r * unit for r in result]


def split_exact(total: Decimal, weights: list[float], scale: int = SCALE) -> list[Decimal]:
    """Split ``total`` by ``weights`` into parts at the lake's precision that add up to it exactly.

    Works in integer units of 10^-scale with exact rationals, then hands the leftover units to the
    largest remainders (earlier parts win ties), so the result is deterministic and sums exactly.
    """
    from fractions import Fraction

    if not weights or sum(weights) <= 0:
        raise ValueError("split_exact needs weights with a positive sum")
    unit = Decimal(1).scaleb(-scale)
    units = int((Decimal(total) / unit).to_integral_value(rounding=ROUND_HALF_EVEN))
    sign, units = (-1 if units < 0 else 1), abs(units)
    exact_weights = [Fraction(w) for w in weights]
    whole = sum(exact_weights)
    raw = [units * w / whole for w in exact_weights]
    floors = [int(r) for r in raw]  # raw >= 0, so int() floors
    leftover = units - sum(floors)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - floors[i]), i))
    for i in order[:leftover]:
        floors[i] += 1
    return [Decimal(sign * f).scaleb(-scale) for f in floors]
