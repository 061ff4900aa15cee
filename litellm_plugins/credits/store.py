"""Postgres, the book of record: accounts, ledger, holds.

Invariants (checked by ``verify``): ``credit_accounts.balance`` equals the sum of the account's
ledger ``delta``; a hold is settled at most once (its status only moves to ``settled`` once, and the
ledger has one row per (hold id, kind)). Every write is idempotent, so the writer can retry and the
spool can replay without double-charging.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

# Errors that mean "Postgres is not reachable right now" (spool and retry), as opposed to bugs.
UNAVAILABLE = (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError, asyncpg.InterfaceError,
               asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
               asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError)


@dataclass(frozen=True)
class HoldOp:
    id: str
    call_id: str
    account: str
    amount: int
    ts: float


async def ensure_account(conn: asyncpg.Connection, account: str, starting_units: int) -> None:
    """Open an account with its starting grant exactly once (idempotency key per account)."""
    async with conn.transaction():
        created = await conn.fetchval(
            "INSERT INTO credit_accounts (account, balance, version) VALUES ($1, $2, 1) "
            "ON CONFLICT (account) DO NOTHING RETURNING account", account, starting_units)
        if created:
            await conn.execute(
                "INSERT INTO credit_ledger (account, kind, delta, amount, idempotency_key, balance_after, note) "
                "VALUES ($1, 'grant', $2, $2, $3, $2, 'starting grant')",
                account, starting_units, f"starting-grant:{account}")


async def expire_old(conn: asyncpg.Connection, ttl_seconds: int) -> list[tuple[str, str]]:
    """Void (as ``expire``) every hold pending longer than the TTL; returns (hold id, account)."""
    async with conn.transaction():
        rows = await conn.fetch(
            "UPDATE credit_holds SET status = 'expired', updated_at = now() "
            "WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1) "
            "RETURNING id, account, amount, call_id", float(ttl_seconds))
        if rows:
            await conn.executemany(
                "INSERT INTO credit_ledger (account, kind, delta, amount, hold_id, call_id) "
                "VALUES ($1, 'expire', 0, $2, $3, $4) ON CONFLICT DO NOTHING",
                [(r["account"], r["amount"], r["id"], r["call_id"]) for r in rows])
    return [(r["id"], r["account"]) for r in rows]


@dataclass(frozen=True)
class GrantResult:
    ledger_id: int
    account: str
    amount: int
    balance_after: int
    version: int | None
    replayed: bool


class UnknownAccount(Exception):
    pass


class IdempotencyConflict(Exception):
    pass


async def grant(conn: asyncpg.Connection, account: str, units: int, idempotency_key: str,
                note: str | None, create: bool, starting_units: int, kind: str = "paid",
                expires_at: dt.datetime | None = None) -> GrantResult:
    """Add credits once per idempotency key; a repeated key returns the first result unchanged.

    ``kind`` paid without ``expires_at`` adds to the paid balance (no bucket row: every unit in no
    bucket row is paid); a promotional grant, or a paid one that expires, gets a bucket row of its
    own (docs/credits.md, "Allowances and buckets"), spent in the documented order and expired by
    the sweep."""
    async with conn.transaction():
        # Serialise concurrent grants with the same key: the unique index decides, we read the winner.
        if create:
            await ensure_account(conn, account, starting_units)
        prior = await conn.fetchrow(
            "SELECT l.id, l.account, l.amount, l.balance_after, b.kind, b.expires_at FROM credit_ledger l "
            "LEFT JOIN credit_buckets b ON b.id = l.bucket_id WHERE l.idempotency_key = $1", idempotency_key)
        if prior is not None:
            if prior["account"] != account or prior["amount"] != units or (prior["kind"] or "paid") != kind \
                    or prior["expires_at"] != expires_at:
                raise IdempotencyConflict(
                    f"idempotency_key {idempotency_key!r} was already used for a different grant")
            return GrantResult(prior["id"], prior["account"], prior["amount"], prior["balance_after"], None, True)
        row = await conn.fetchrow(
            "UPDATE credit_accounts a SET balance = balance + $2, version = version + 1, updated_at = now() "
            "WHERE account = $1 RETURNING balance, version", account, units)
        if row is None:
            raise UnknownAccount(account)
        bucket = None
        if kind != "paid" or expires_at is not None:
            bucket = await conn.fetchval(
                "INSERT INTO credit_buckets (account, kind, granted, remaining, expires_at) "
                "VALUES ($1, $2, $3, $3, $4) RETURNING id", account, kind, units, expires_at)
        ledger_id = await conn.fetchval(
            "INSERT INTO credit_ledger (account, kind, delta, amount, idempotency_key, balance_after, note, bucket_id) "
            "VALUES ($1, 'grant', $2, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
            account, units, idempotency_key, row["balance"], note, bucket)
        if ledger_id is None:  # lost a race with the same key: undo by raising, then report the winner
            raise IdempotencyConflict("retry")
        return GrantResult(ledger_id, account, units, row["balance"], row["version"], False)


async def set_caps(conn: asyncpg.Connection, account: str, caps: dict[str, int | None]) -> bool:
    """An account's own spend caps (``cap_day`` / ``cap_week`` / ``cap_month``; None removes one);
    False if the account does not exist. Bumps the version so Redis takes them (``redis_state``)."""
    sets = ", ".join(f"cap_{k} = ${i + 2}" for i, k in enumerate(caps))
    row = await conn.fetchrow(f"UPDATE credit_accounts SET {sets}, version = version + 1, updated_at = now() "
                              "WHERE account = $1 RETURNING account", account, *caps.values())
    return row is not None


async def redis_state(conn: asyncpg.Connection, account: str) -> tuple[int, int, str] | None:
    """(balance, version, credits_state) to copy into Redis after a change outside the writer."""
    row = await conn.fetchrow("SELECT balance, version, credits_state(a) AS state FROM credit_accounts a "
                              "WHERE account = $1", account)
    return None if row is None else (row["balance"], row["version"], row["state"])


async def ensure_allowance(conn: asyncpg.Connection, account: str, tier: str | None,
                           allowance: tuple[str | None, int, float] | None, starting_units: int) -> bool:
    """``credits_ensure_allowance`` for one account (the balance API: right for an idle account)."""
    period, amount, end = allowance or (None, 0, 0.0)
    return bool(await conn.fetchval("SELECT credits_ensure_allowance($1, $2, $3, $4, to_timestamp($5), $6)",
                                    account, tier, period, amount, end, starting_units))


async def buckets(conn: asyncpg.Connection, account: str, now: float) -> list[dict[str, Any]]:
    """The account's live bucket rows, in spending order (the paid balance is what is left)."""
    rows = await conn.fetch(
        "SELECT b.id, b.kind, b.granted, b.remaining, b.period, b.expires_at FROM credit_buckets b "
        "JOIN credit_accounts a ON a.account = b.account WHERE b.account = $1 "
        "AND (b.remaining IS NULL OR b.remaining <> 0) AND (b.expires_at IS NULL OR b.expires_at > to_timestamp($2)) "
        "AND (b.kind <> 'allowance' OR b.period = a.allowance_period) "
        "ORDER BY CASE b.kind WHEN 'allowance' THEN 0 WHEN 'promotional' THEN 1 ELSE 2 END, b.expires_at NULLS LAST, b.id",
        account, now)
    return [dict(r) for r in rows]


async def balance(conn: asyncpg.Connection, account: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT a.balance, a.version, a.tier, a.allowance_period, a.allowance_amount, a.spent_day_key, a.spent_day, "
        "a.spent_week_key, a.spent_week, a.spent_month_key, a.spent_month, a.cap_day, a.cap_week, a.cap_month, "
        "COALESCE((SELECT sum(amount) FROM credit_holds h "
        "WHERE h.account = a.account AND h.status = 'pending'), 0)::bigint AS held "
        "FROM credit_accounts a WHERE a.account = $1", account)
    return dict(row) if row else None


async def ledger(conn: asyncpg.Connection, account: str, limit: int, before_id: int | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, kind, delta, amount, hold_id, call_id, idempotency_key, balance_after, note, created_at "
        "FROM credit_ledger WHERE account = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        account, before_id, limit)
    return [dict(r) for r in rows]


async def accounts(conn: asyncpg.Connection, search: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    """A page of accounts with open holds, last activity and the tier of that latest request (one index
    probe per listed account on ``usage_log(account, created_at)``, so the page costs the same however
    large the log is)."""
    rows = await conn.fetch(
        "SELECT a.account, a.balance, a.created_at, "
        "COALESCE((SELECT sum(amount) FROM credit_holds h WHERE h.account = a.account AND h.status = 'pending'), 0)"
        "::bigint AS held, u.created_at AS last_activity, u.tier "
        "FROM credit_accounts a LEFT JOIN LATERAL (SELECT created_at, tier FROM usage_log l WHERE l.account = a.account "
        "ORDER BY created_at DESC LIMIT 1) u ON true "
        "WHERE ($1::text IS NULL OR strpos(lower(a.account), lower($1)) > 0) "
        "ORDER BY u.created_at DESC NULLS LAST, a.account LIMIT $2 OFFSET $3", search or None, limit, offset)
    return [dict(r) for r in rows]


async def verify(conn: asyncpg.Connection) -> list[str]:
    """Every difference between balances, ledger and holds, as human-readable lines (empty = OK)."""
    problems: list[str] = []
    rows = await conn.fetch(
        "SELECT a.account, a.balance, COALESCE(l.total, 0)::bigint AS ledger_total FROM credit_accounts a "
        "FULL OUTER JOIN (SELECT account, sum(delta) AS total FROM credit_ledger GROUP BY account) l "
        "ON l.account = a.account WHERE a.balance IS DISTINCT FROM COALESCE(l.total, 0)")
    for r in rows:
        problems.append(f"account {r['account']}: balance {r['balance']} != ledger sum {r['ledger_total']} (units)")
    rows = await conn.fetch(
        "SELECT h.id, h.account, h.charged, l.amount FROM credit_holds h "
        "LEFT JOIN credit_ledger l ON l.hold_id = h.id AND l.kind = 'settle' "
        "WHERE h.status = 'settled' AND (l.id IS NULL OR l.amount <> h.charged)")
    for r in rows:
        problems.append(f"hold {r['id']} ({r['account']}): settled for {r['charged']} but ledger says {r['amount']}")
    # Each settle: what left the balance is the charge minus what an unlimited allowance paid, and its
    # split never exceeds the charge.
    rows = await conn.fetch(
        "SELECT l.id, l.account, l.amount, l.delta, COALESCE(s.total, 0)::bigint AS split_total, "
        "COALESCE((l.split->>'unlimited')::bigint, 0) AS unlimited FROM credit_ledger l LEFT JOIN LATERAL ("
        "SELECT sum(e.value::bigint) AS total FROM jsonb_each_text(l.split) e) s ON true "
        "WHERE l.kind = 'settle' AND (l.delta <> -(l.amount - COALESCE((l.split->>'unlimited')::bigint, 0)) "
        "OR COALESCE(s.total, 0) > l.amount)")
    for r in rows:
        problems.append(f"settle {r['id']} ({r['account']}): charge {r['amount']}, delta {r['delta']}, paid by "
                        f"buckets {r['split_total']} (unlimited {r['unlimited']})")
    # Every limited bucket: what its ledger rows put in, minus what settles took from it and what
    # expired, is what it holds.
    rows = await conn.fetch(
        "WITH g AS (SELECT bucket_id, sum(delta) FILTER (WHERE kind IN ('grant', 'allowance')) AS put, "
        "sum(amount) FILTER (WHERE kind IN ('allowance_expire', 'bucket_expire')) AS expired "
        "FROM credit_ledger WHERE bucket_id IS NOT NULL GROUP BY bucket_id), "
        "s AS (SELECT e.key::bigint AS bucket_id, sum(e.value::bigint) AS spent FROM credit_ledger l, "
        "jsonb_each_text(l.split) e WHERE l.kind = 'settle' AND l.split IS NOT NULL AND e.key <> 'unlimited' "
        "GROUP BY 1) "
        "SELECT b.id, b.account, b.kind, b.remaining, COALESCE(g.put, 0)::bigint AS put, "
        "COALESCE(g.expired, 0)::bigint AS expired, COALESCE(s.spent, 0)::bigint AS spent "
        "FROM credit_buckets b LEFT JOIN g ON g.bucket_id = b.id LEFT JOIN s ON s.bucket_id = b.id "
        "WHERE b.granted <> -1 "
        "AND (b.remaining < 0 OR COALESCE(g.put, 0) - COALESCE(s.spent, 0) - COALESCE(g.expired, 0) <> b.remaining)")
    for r in rows:
        problems.append(f"bucket {r['id']} ({r['kind']}, {r['account']}): holds {r['remaining']} but its ledger says "
                        f"{r['put']} in - {r['spent']} spent - {r['expired']} expired")
    rows = await conn.fetch(
        "SELECT a.account, a.allowance_period FROM credit_accounts a WHERE a.allowance_period IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM credit_buckets b WHERE b.account = a.account AND b.period = a.allowance_period)")
    for r in rows:
        problems.append(f"account {r['account']}: allowance period {r['allowance_period']} has no bucket")
    rows = await conn.fetch(
        "SELECT l.hold_id, l.account FROM credit_ledger l LEFT JOIN credit_holds h ON h.id = l.hold_id "
        "WHERE l.kind = 'settle' AND (h.id IS NULL OR h.status <> 'settled')")
    for r in rows:
        problems.append(f"ledger settle for hold {r['hold_id']} ({r['account']}) without a settled hold")
    return problems


Release = tuple[str, str, "int | None", "int | None", "str | None"]  # (account, hold id, balance, version, state)


@dataclass(frozen=True)
class AllowanceOp:
    """What ``credits_ensure_allowance`` needs: the allowance an account's tier gives now."""
    account: str
    tier: str | None
    period: str | None  # None: the tier has no allowance (only the tier is recorded)
    amount: int
    expires: float


async def apply_batch(conn: asyncpg.Connection, holds: list[HoldOp], settles: list[tuple[HoldOp, int]],
                      voids: list[HoldOp], starting_units: int, allowances: list[AllowanceOp] = (),
                      now: float = 0.0, spend_keys: tuple[str, str, str] = ("", "", ""),
                      flushed: float = 0.0) -> list[Release]:
    """Hold rows, allowances, settles and voids of one writer batch: one call of ``credits_apply_batch_v2``.

    The function (migrations ``20261123000500_credits_apply_batch``, where its exactly-once gates
    are spelled out, and ``20261202010000_credits_allowances``: allowances first, then each charge
    spread over the buckets) runs the batch's statements server-side in one transaction, so a batch
    costs one round trip instead of about nine — what a flush cost the proxy's event loop was mostly
    per-statement overhead (benchmarks/micro_credits.py). Duplicate callbacks, writer retries and
    spool replays change nothing the second time.
    """
    every: dict[str, HoldOp] = {}
    for h in [*holds, *(s for s, _ in settles), *voids]:
        every.setdefault(h.id, h)
    first: dict[str, int] = {}
    for h, charge in settles:
        first.setdefault(h.id, charge)
    void_ids = list(dict.fromkeys(h.id for h in voids))
    rows = await conn.fetch(
        "SELECT out_account, out_balance, out_version, out_state FROM credits_apply_batch_v2("
        "$1::text[], $2::text[], $3::text[], $4::bigint[], $5::float8[], $6::text[], $7::bigint[], "
        "$8::text[], $9::bigint, $10::text[], $11::text[], $12::text[], $13::bigint[], $14::float8[], "
        "$15::float8, $16, $17, $18, $19::float8)",
        [h.id for h in every.values()], [h.call_id for h in every.values()],
        [h.account for h in every.values()], [h.amount for h in every.values()],
        [h.ts for h in every.values()], list(first), list(first.values()), void_ids, starting_units,
        [a.account for a in allowances], [a.tier for a in allowances], [a.period for a in allowances],
        [a.amount for a in allowances], [a.expires for a in allowances], now or time.time(), *spend_keys,
        flushed or now or time.time())
    finals = {r["out_account"]: (r["out_balance"], r["out_version"], r["out_state"]) for r in rows}
    releases: list[Release] = []
    released: set[str] = set()
    for h, _ in settles:
        bal, ver, state = finals.get(h.account, (None, None, None))
        releases.append((h.account, h.id, bal, ver, state))
        released.add(h.account)
    releases.extend((h.account, h.id, None, None, None) for h in voids)
    for account, (bal, ver, state) in finals.items():  # an allowance changed, no settle of the account
        if account not in released:
            releases.append((account, "", bal, ver, state))
    return releases
