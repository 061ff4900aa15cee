"""Operations shared by the HTTP API and the CLI (validation of grants, Redis follow-up)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from litellm_plugins.credits import store
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


async def grant(pool: asyncpg.Pool, cache: CreditCache | None, settings: CreditsSettings, account: str,
                units: int, idempotency_key: str, note: str | None, create: bool) -> dict[str, Any]:
    starting = credits_to_units(settings.starting_grant)
    for _ in range(3):
        async with pool.acquire() as conn:
            try:
                result = await store.grant(conn, account, units, idempotency_key, note, create, starting)
                break
            except store.IdempotencyConflict as exc:
                if str(exc) != "retry":
                    raise
        # a concurrent grant with the same key won: loop to read and return its result
    else:  # pragma: no cover
        raise RuntimeError("grant did not converge")
    if not result.replayed:
        metrics.granted(int(result.amount))
    if cache is not None and result.version is not None:
        try:
            await cache.release(account, "", result.balance_after, result.version)
        except (RedisError, OSError):
            pass  # the reconciler converges the cache
    return {"ledger_id": result.ledger_id, "account": result.account, "amount": fmt(result.amount),
            "balance": fmt(result.balance_after), "idempotency_key": idempotency_key,
            "replayed": result.replayed}


def ledger_entry(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "kind": row["kind"], "delta": fmt(row["delta"]), "amount": fmt(row["amount"]),
            "hold_id": row["hold_id"], "call_id": row["call_id"], "idempotency_key": row["idempotency_key"],
            "balance_after": fmt(row["balance_after"]), "note": row["note"],
            "created_at": row["created_at"].isoformat()}
