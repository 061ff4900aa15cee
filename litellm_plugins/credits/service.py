"""Operations shared by the HTTP API and the CLI (validation of grants, Redis follow-up)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from litellm_plugins.core import clock
from litellm_plugins.credits import store
from litellm_plugins.credits.allowance import KINDS, UNLIMITED, Allowances
from litellm_plugins.credits.cache import CreditCache
from litellm_plugins.metrics import record as metrics
from litellm_plugins.credits.money import credits_to_units, fmt
from litellm_plugins.credits.settings import CreditsSettings

ACCOUNT_RE = re.compile(r"^(user|team|key):[^\s]{1,256}$")
IDEMPOTENCY_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class GrantError(ValueError):
    """Invalid grant input; the message is safe to show (no secrets)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def parse_amount(value: Any, settings: CreditsSettings) -> int:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise GrantError("amount must be a decimal number of credits, e.g. \"25\" or \"12.5\"", "amount")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        raise GrantError(f"amount must be a decimal number of credits, got {str(value)[:40]!r}", "amount") from None
    if not amount.is_finite():
        raise GrantError("amount must be a finite number", "amount")
    if amount <= 0:
        raise GrantError("amount must be greater than zero", "amount")
    if amount > settings.max_grant:
        raise GrantError(f"amount exceeds the largest allowed grant of {settings.max_grant} credits", "amount")
    try:
        return credits_to_units(amount)
    except ValueError:
        raise GrantError("amount has more than 6 decimal places (1 unit = 0.000001 credit)", "amount") from None


def check_account(account: Any) -> str:
    if not isinstance(account, str) or not ACCOUNT_RE.match(account):
        raise GrantError("account must look like user:<id>, team:<id> or key:<hash>", "account")
    return account


def check_idempotency_key(key: Any) -> str:
    if not isinstance(key, str) or not IDEMPOTENCY_RE.match(key):
        raise GrantError("idempotency_key is required: 1-128 characters of A-Z a-z 0-9 . _ : -",
                         "idempotency_key")
    return key


def check_kind(kind: Any) -> str:
    if kind is None:
        return "paid"
    if kind not in ("paid", "promotional"):
        raise GrantError("kind must be \"paid\" or \"promotional\"", "kind")
    return kind


def check_expires_at(value: Any) -> dt.datetime | None:
    """An ISO 8601 time with a time zone (``2027-01-31T00:00:00Z``), in the future."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise GrantError("expires_at must be an ISO 8601 time such as 2027-01-31T00:00:00Z", "expires_at")
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise GrantError(f"expires_at must be an ISO 8601 time such as 2027-01-31T00:00:00Z, got {value[:40]!r}",
                         "expires_at") from None
    if when.tzinfo is None:
        raise GrantError("expires_at needs a time zone (e.g. a trailing Z for UTC)", "expires_at")
    if when.timestamp() <= clock.now():
        raise GrantError("expires_at is in the past", "expires_at")
    return when.astimezone(dt.UTC)


async def push_state(cache: CreditCache | None, conn: asyncpg.Connection, account: str) -> None:
    """Copy an account's balance, allowance, counters and caps into Redis after a change made outside
    the writer (grant, caps, the balance API's allowance renewal); the reconciler would within a round."""
    if cache is None:
        return
    state = await store.redis_state(conn, account)
    if state is None:
        return
    try:
        await cache.release(account, "", state[0], state[1], state=state[2])
    except (RedisError, OSError):
        pass  # the reconciler converges the cache


async def grant(pool: asyncpg.Pool, cache: CreditCache | None, settings: CreditsSettings, account: str,
                units: int, idempotency_key: str, note: str | None, create: bool, kind: str = "paid",
                expires_at: dt.datetime | None = None) -> dict[str, Any]:
    starting = credits_to_units(settings.starting_grant)
    for _ in range(3):
        async with pool.acquire() as conn:
            try:
                result = await store.grant(conn, account, units, idempotency_key, note, create, starting, kind,
                                           expires_at)
                break
            except store.IdempotencyConflict as exc:
                if str(exc) != "retry":
                    raise
        # a concurrent grant with the same key won: loop to read and return its result
    else:  # pragma: no cover
        raise RuntimeError("grant did not converge")
    if not result.replayed:
        metrics.granted(int(result.amount))
    if result.version is not None:
        async with pool.acquire() as conn:
            await push_state(cache, conn, account)
    return {"ledger_id": result.ledger_id, "account": result.account, "amount": fmt(result.amount),
            "balance": fmt(result.balance_after), "kind": kind,
            "expires_at": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if expires_at else None,
            "idempotency_key": idempotency_key, "replayed": result.replayed}


def _iso(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


async def balance_view(conn: asyncpg.Connection, cache: CreditCache | None, allowances: Allowances,
                       account: str, tier: str | None,
                       starting_units: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(``store.balance`` row, view): the account's row, and its buckets, allowance, spend this day /
    week / month and caps, from Postgres.

    The allowance is renewed first when the account's open period is over (an idle account: the
    same ``credits_ensure_allowance`` as the request path and the sweep, so it happens once), and
    the renewal copied to Redis. (None, None): no such account.
    """
    now = clock.now()
    row = await store.balance(conn, account)
    if row is None:
        return None, None
    tier = tier or row["tier"]
    if allowances.enabled and tier is not None:  # a tier never seen is not guessed (see sweep_buckets)
        if await store.ensure_allowance(conn, account, tier, allowances.ensure_args(tier, now), starting_units):
            await push_state(cache, conn, account)
            row = await store.balance(conn, account)
    live = await store.buckets(conn, account, now)
    paid = row["balance"] - sum(b["remaining"] or 0 for b in live)
    buckets = [{"id": b["id"], "kind": b["kind"], "period": b["period"],
                "remaining": "unlimited" if b["remaining"] is None else fmt(b["remaining"]),
                "expires_at": _iso(b["expires_at"])} for b in live]
    buckets.append({"id": None, "kind": "paid", "period": None, "remaining": fmt(paid), "expires_at": None})
    allowance = None
    open_bucket = next((b for b in live if b["kind"] == "allowance"), None)
    if row["allowance_period"] is not None:
        end = open_bucket["expires_at"] if open_bucket else await conn.fetchval(  # used up: not a live bucket
            "SELECT expires_at FROM credit_buckets WHERE account = $1 AND period = $2", account, row["allowance_period"])
        unlimited = row["allowance_amount"] == UNLIMITED
        allowance = {"period": row["allowance_period"].split("/", 1)[-1], "period_start": row["allowance_period"][:10],
                     "amount": "unlimited" if unlimited else fmt(row["allowance_amount"]),
                     "left": "unlimited" if unlimited else fmt(open_bucket["remaining"] if open_bucket else 0),
                     "resets_at": _iso(end)}
    keys = allowances.calendar.spend_keys(now)
    spend: dict[str, str] = {}
    caps: dict[str, Any] = {}
    rules = allowances.of(tier)
    for i, kind in enumerate(KINDS):
        spent = row[f"spent_{kind}"] if row[f"spent_{kind}_key"] == keys[i] else 0
        spend[kind] = fmt(spent)
        tier_cap = rules.caps[i] if rules is not None else None
        own = row[f"cap_{kind}"]
        cap = min(c for c in (tier_cap, own) if c is not None) if (tier_cap is not None or own is not None) else None
        if cap is not None:
            caps[kind] = {"cap": fmt(cap), "source": "account" if own is not None and own == cap else "tier",
                          "spent": fmt(spent), "resets_at": allowances.calendar.period(kind, now).resets_at}
    return row, {"tier": tier, "allowance": allowance, "buckets": buckets, "spend": spend, "caps": caps}


def parse_caps(body: dict[str, Any]) -> dict[str, int | None]:
    """``{"day": "50", "week": null, ...}`` -> units per kind (None: no cap); only the kinds given."""
    caps: dict[str, int | None] = {}
    for kind in KINDS:
        if kind not in body:
            continue
        value = body[kind]
        if value is None:
            caps[kind] = None
            continue
        try:
            amount = Decimal(str(value).strip())
            if isinstance(value, bool) or not amount.is_finite() or amount < 0 or amount > Decimal(10) ** 12:
                raise InvalidOperation
            caps[kind] = credits_to_units(amount)
        except (InvalidOperation, ValueError):
            raise GrantError(f"{kind} must be a number of credits from 0 to 10^12 with at most 6 decimals, "
                             "or null to remove the cap", kind) from None
    if not caps:
        raise GrantError("give at least one of day, week, month (credits, or null to remove)", "day")
    return caps


def ledger_entry(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "kind": row["kind"], "delta": fmt(row["delta"]), "amount": fmt(row["amount"]),
            "hold_id": row["hold_id"], "call_id": row["call_id"], "idempotency_key": row["idempotency_key"],
            "balance_after": fmt(row["balance_after"]), "note": row["note"],
            "created_at": row["created_at"].isoformat()}
