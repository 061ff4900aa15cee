"""``/plugins/credits`` (balance, ledger, admin grant) and, mounted from here, ``/plugins/usage``.

A non-admin key sees only its own account; asking for another is a 403. Admins (master key or
``proxy_admin``) may read any account and grant credits with a required idempotency key.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from redis.exceptions import RedisError

from litellm_plugins.core import runtime
from litellm_plugins.core.errors import bad_request, forbidden, not_found, plugin_error
from litellm_plugins.core.identity import Caller
from litellm_plugins.core.routes import admin_caller, current_caller, resolve_account
from litellm_plugins.credits import service, store
from litellm_plugins.credits.hook import engine
from litellm_plugins.credits.money import fmt
from litellm_plugins.usage.api import router as usage_router

credits_router = APIRouter(prefix="/plugins/credits", tags=["litellm-plugins: credits"])


@credits_router.get("/balance")
async def get_balance(account: str | None = Query(default=None),
                      caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    acct = resolve_account(caller, account)
    rt = runtime.get()
    eng = engine()
    own = acct == caller.account(rt.settings.account_order)
    # The caller's tier only when its key or team names one; else the tier the account's requests were
    # last served at (routing may set it; default_tier is not guessed: see service.balance_view).
    tier = (caller.metadata.get("tier") or caller.team_metadata.get("tier")) if own else None
    tier = str(tier) if tier else None
    async with rt.pool.acquire() as conn:
        if eng is not None:
            row, view = await service.balance_view(conn, eng.cache, eng.allowances, acct, tier, eng.starting_units)
        else:
            row, view = await store.balance(conn, acct), None
    if row is None:
        if account is not None and account != caller.account(runtime.get().settings.account_order):
            not_found(f"no credit account {acct!r}", "account")
        eng = engine()
        start = eng.starting_units if eng else 0
        return {"account": acct, "balance": fmt(start), "held": fmt(0), "leased": fmt(0), "available": fmt(start),
                "opened": False}
    held, leased = row["held"], 0
    if eng is not None:
        try:
            snap = await eng.cache.with_leases(acct)
            if snap is not None:
                held, leased = snap[1] - snap[2], snap[2]
        except (RedisError, OSError):
            pass
    # held: in-flight requests; leased: set aside by busy workers (credits/lease.py), spent by nobody
    # buckets / allowance / spend / caps: docs/credits.md, "Allowances and buckets"
    return {"account": acct, "balance": fmt(row["balance"]), "held": fmt(held), "leased": fmt(leased),
            "available": fmt(row["balance"] - held - leased), "opened": True, **(view or {})}


@credits_router.get("/ledger")
async def get_ledger(account: str | None = Query(default=None), limit: int = Query(default=100, ge=1, le=1000),
                     before_id: int | None = Query(default=None, ge=1),
                     caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    acct = resolve_account(caller, account)
    async with runtime.get().pool.acquire() as conn:
        rows = await store.ledger(conn, acct, limit, before_id)
    entries = [service.ledger_entry(r) for r in rows]
    return {"account": acct, "entries": entries,
            "next_before_id": entries[-1]["id"] if len(entries) == limit else None}


@credits_router.post("/grant")
async def post_grant(body: Any = Body(default=None), caller: Caller = Depends(admin_caller)) -> dict[str, Any]:
    if not isinstance(body, dict):
        bad_request("body must be a JSON object with account, amount and idempotency_key")
    unknown = set(body) - {"account", "amount", "idempotency_key", "note", "create", "kind", "expires_at"}
    if unknown:
        bad_request(f"unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    eng = engine()
    rt = runtime.get()
    settings = rt.settings.credits
    try:
        account = service.check_account(body.get("account"))
        units = service.parse_amount(body.get("amount"), settings)
        key = service.check_idempotency_key(body.get("idempotency_key"))
        kind = service.check_kind(body.get("kind"))
        expires_at = service.check_expires_at(body.get("expires_at"))
    except service.GrantError as exc:
        bad_request(str(exc), exc.param)
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 500):
        bad_request("note must be a string of at most 500 characters", "note")
    create = body.get("create", False)
    if not isinstance(create, bool):
        bad_request("create must be true or false", "create")
    try:
        return await service.grant(rt.pool, eng.cache if eng else None, settings, account, units, key, note, create,
                                   kind, expires_at)
    except store.UnknownAccount:
        bad_request(f"unknown account {account!r}: it has made no request yet (pass \"create\": true to open it)",
                    "account")
    except store.IdempotencyConflict as exc:
        raise plugin_error(409, str(exc), "idempotency_conflict", "idempotency_key") from None


@credits_router.post("/caps")
async def post_caps(body: Any = Body(default=None), caller: Caller = Depends(admin_caller)) -> dict[str, Any]:
    """Admin: an account's own spend caps, ``{"account", "day", "week", "month"}`` in credits (null
    removes one; kinds not given are unchanged). The lower of the account's and its tier's cap applies."""
    if not isinstance(body, dict):
        bad_request("body must be a JSON object with account and at least one of day, week, month")
    unknown = set(body) - {"account", "day", "week", "month"}
    if unknown:
        bad_request(f"unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    try:
        account = service.check_account(body.get("account"))
        caps = service.parse_caps(body)
    except service.GrantError as exc:
        bad_request(str(exc), exc.param)
    eng = engine()
    async with runtime.get().pool.acquire() as conn:
        if not await store.set_caps(conn, account, caps):
            not_found(f"no credit account {account!r}", "account")
        await service.push_state(eng.cache if eng else None, conn, account)
        row = await conn.fetchrow("SELECT cap_day, cap_week, cap_month FROM credit_accounts WHERE account = $1", account)
    return {"account": account, **{k: fmt(row[f"cap_{k}"]) for k in ("day", "week", "month")}}


@credits_router.get("/accounts", dependencies=[Depends(admin_caller)])
async def list_accounts(search: str | None = Query(default=None, max_length=200),
                        limit: int = Query(default=50, ge=1, le=500),
                        offset: int = Query(default=0, ge=0, le=10_000_000)) -> dict[str, Any]:
    """Admin: accounts (optionally whose id contains ``search``), most recently active first, each with
    its balance, open holds, last activity and ``tier`` (that of its latest request; null before any)."""
    async with runtime.get().pool.acquire() as conn:
        rows = await store.accounts(conn, search, limit, offset)
    return {"accounts": [{"account": r["account"], "balance": fmt(r["balance"]), "held": fmt(r["held"]),
                          "available": fmt(r["balance"] - r["held"]),
                          "last_activity": r["last_activity"].isoformat() if r["last_activity"] else None,
                          "tier": r["tier"],
                          "created_at": r["created_at"].isoformat()} for r in rows],
            "limit": limit, "offset": offset}


@credits_router.get("/verify", dependencies=[Depends(admin_caller)])
async def get_verify() -> dict[str, Any]:
    """Admin: the same consistency check as ``litellm-plugins credits verify`` (balances = ledger sums,
    every settled hold has exactly its ledger entry); ``problems`` empty means consistent."""
    async with runtime.get().pool.acquire() as conn:
        problems = await store.verify(conn)
    return {"ok": not problems, "problems": problems}


# core mounts ``router``: both areas, since core only knows the credits capability.
# A flat router (plain APIRoutes with full paths): core.routes.mount de-duplicates by route path.
router = APIRouter()
router.routes.extend([*credits_router.routes, *usage_router.routes])
