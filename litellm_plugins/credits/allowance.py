"""Calendar periods of allowances, spend caps and spend counters (docs/credits.md, "Allowances and buckets").

Periods are calendar days, ISO weeks (Monday first) and months in ``credits.timezone``, not anchored at
each account's creation: every account of a tier resets at the same moment, which is what an
operator can announce ("your credits renew on the 1st"), what a support desk can reason about, and
what lets one background sweep renew idle accounts with one query per tier. Spend counters and caps
use the same calendar, so "this month" means one thing everywhere.

A period is named by its start date and kind, ``2026-12-01/month``: keys of one kind sort in time
order, and the allowance logic (Lua and SQL) only ever moves an account to a key whose start date is
not earlier than the open one's.

The request path asks ``Calendar.period`` for the current period of a kind: a cached answer until
the period ends, so it costs a comparison. ``clock.now()`` is the only time source of this module:
tests move it (``LITELLM_PLUGINS_CLOCK_FILE``) to cross a month in a second.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from litellm_plugins.core import clock
from litellm_plugins.credits.money import credits_to_units
from litellm_plugins.credits.settings import CreditsSettings

KINDS = ("day", "week", "month")
UNLIMITED = -1  # allowance amount of an unlimited tier, in Lua, SQL and the API's units


@dataclass(frozen=True)
class Period:
    kind: str
    start: float  # Unix seconds
    end: float  # Unix seconds: the next period's start (when an allowance resets)
    start_date: str  # local start date, YYYY-MM-DD

    @property
    def key(self) -> str:
        return f"{self.start_date}/{self.kind}"

    @property
    def resets_at(self) -> str:
        """ISO 8601 in UTC (``2027-01-01T00:00:00Z`` for a UTC month): headers and API."""
        return dt.datetime.fromtimestamp(self.end, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Calendar:
    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)
        self._current: dict[str, Period] = {}

    def period(self, kind: str, now: float | None = None) -> Period:
        """The ``kind`` period containing ``now`` (default: ``clock.now()``)."""
        at = clock.now() if now is None else now
        cached = self._current.get(kind)
        if cached is not None and cached.start <= at < cached.end:
            return cached
        found = self._compute(kind, at)
        if now is None:
            self._current[kind] = found
        return found

    def _compute(self, kind: str, at: float) -> Period:
        local = dt.datetime.fromtimestamp(at, self.zone)
        day = local.date()
        if kind == "day":
            start, end = day, day + dt.timedelta(days=1)
        elif kind == "week":
            start = day - dt.timedelta(days=day.weekday())
            end = start + dt.timedelta(days=7)
        elif kind == "month":
            start = day.replace(day=1)
            end = (start + dt.timedelta(days=32)).replace(day=1)
        else:
            raise ValueError(f"unknown period kind {kind!r}")
        midnight = dt.time(0, 0)
        return Period(kind, dt.datetime.combine(start, midnight, self.zone).timestamp(),
                      dt.datetime.combine(end, midnight, self.zone).timestamp(), start.isoformat())

    def spend_keys(self, now: float | None = None) -> tuple[str, str, str]:
        """Start dates of the current day, week and month: the keys of the spend counters."""
        return tuple(self.period(kind, now).start_date for kind in KINDS)  # type: ignore[return-value]


@dataclass(frozen=True)
class TierRules:
    """A tier's allowance (None: none) and caps in units (None: no cap), per ``KINDS`` order."""

    allowance: int | None
    allowance_kind: str | None
    caps: tuple[int | None, int | None, int | None]


class Allowances:
    """The allowance and cap rules of every tier, and the arguments the hold script and the SQL
    functions take (``hold_args``, ``ensure_args``)."""

    def __init__(self, settings: CreditsSettings) -> None:
        self.calendar = Calendar(settings.timezone)
        self.default_tier = settings.default_tier
        self.rules: dict[str, TierRules] = {}
        for tier in set(settings.allowances) | set(settings.caps):
            alw = settings.allowances.get(tier)
            caps = settings.caps.get(tier)
            amount = None
            if alw is not None:
                amount = UNLIMITED if alw.amount == "unlimited" else credits_to_units(alw.amount)
            limits = tuple(None if caps is None or getattr(caps, k) is None else credits_to_units(getattr(caps, k))
                           for k in KINDS)
            self.rules[tier] = TierRules(amount, alw.period if alw else None, limits)  # type: ignore[arg-type]
        self.enabled = bool(self.rules)

    def of(self, tier: str | None) -> TierRules | None:
        return self.rules.get(tier or self.default_tier)

    def period_of(self, tier: str | None, now: float | None = None) -> Period | None:
        rules = self.of(tier)
        if rules is None or rules.allowance_kind is None:
            return None
        return self.calendar.period(rules.allowance_kind, now)

    def hold_args(self, tier: str | None) -> list[object]:
        """ARGV 8-15 of the hold script: the allowance's period key and amount ('' and 0: none), the
        spend counters' keys (always: an account may have caps of its own), the tier's caps ('': none)."""
        rules = self.of(tier)
        day, week, month = self.calendar.spend_keys()
        if rules is None:
            return ["", 0, day, week, month, "", "", ""]
        period = self.period_of(tier)
        caps = ["" if c is None else c for c in rules.caps]
        return [period.key if period else "", rules.allowance if period else 0, day, week, month, *caps]

    def ensure_args(self, tier: str | None, now: float | None = None) -> tuple[str | None, int, float] | None:
        """(period key, amount, period end) of ``credits_ensure_allowance``; None: the tier has no allowance."""
        rules = self.of(tier)
        period = self.period_of(tier, now)
        if rules is None or period is None or rules.allowance is None:
            return None
        return period.key, rules.allowance, period.end
