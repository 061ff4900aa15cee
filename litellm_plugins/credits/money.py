"""Exact money: integer units (1 credit = 1,000,000 units), Decimal at the boundaries, never float.

Rounding rules (documented in docs/credits.md and tested exactly):
  * a charge is ROUND_HALF_UP of ``response_cost × credits_per_usd × markup`` to a whole unit;
  * a hold (worst case) is rounded UP (ceiling), so a hold never under-reserves its own estimate.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

UNITS_PER_CREDIT = 1_000_000
_UNIT = Decimal(UNITS_PER_CREDIT)
_QUANT = Decimal("0.000001")


def to_decimal(value: object) -> Decimal:
    """LiteLLM hands us floats (``response_cost``); ``str()`` first so 0.1 means 0.1."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or value is None:
        raise InvalidOperation(f"not a number: {value!r}")
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def charge_units(cost_usd: Decimal, credits_per_usd: Decimal, markup: Decimal) -> int:
    if cost_usd <= 0:
        return 0
    return int((cost_usd * credits_per_usd * markup * _UNIT).to_integral_value(ROUND_HALF_UP))


def hold_units(cost_usd: Decimal, credits_per_usd: Decimal, markup: Decimal) -> int:
    if cost_usd <= 0:
        return 0
    return int((cost_usd * credits_per_usd * markup * _UNIT).to_integral_value(ROUND_CEILING))


def credits_to_units(credits: Decimal) -> int:
    """Exact conversion; raises ValueError when the amount is finer than one unit."""
    scaled = credits * _UNIT
    if scaled != scaled.to_integral_value():
        raise ValueError("amount has more than 6 decimal places")
    return int(scaled)


def fmt(units: int | None) -> str | None:
    """Units -> decimal credit string with 6 places (``12.345678``); exact."""
    if units is None:
        return None
    return str((Decimal(units) / _UNIT).quantize(_QUANT))
