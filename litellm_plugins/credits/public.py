"""Helpers other capabilities may call (routing's optional ``degrade_when_low_credits``).

Both return ``None`` / 0 when credits are disabled, so callers need no feature check of their own.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from litellm_plugins.credits.hook import engine


async def available_units(account: str) -> int | None:
    """Balance minus open holds, in units (1 credit = 1,000,000); None when credits are off."""
    eng = engine()
    if eng is None:
        return None
    return await eng.available_units(account)


def worst_case_units(model_group: str, data: dict[str, Any], tier: str | None = None) -> int:
    """The hold a request would place on ``model_group`` (units, markup of ``tier`` applied)."""
    eng = engine()
    if eng is None:
        return 0
    markup: Decimal = eng.settings.markup(tier)
    return eng.worst_case_units(model_group, data, markup)
