"""Postgres, the book of record: accounts, ledger, holds.

Invariants (checked by ``verify``): ``credit_accounts.balance`` equals the sum of the account's
ledger ``delta``; a hold is settled at most once (its status only moves to ``settled`` once, and the
ledger has one row per (hold id, kind)). Every write is idempotent, so the writer can retry and the
spool can replay without double-charging.
"""

from __future__ import annotations

import asyncio
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
                note: str | None, create: bool, starting_units: int) -> GrantResult:
    """Add credits once per idempotency key; a repeated key returns the first result unchanged."""
    async with conn.transaction():
        # Serialise concurrent grants with the same key: the unique index decides, we read the winner.
        if create:
            await ensure_account(conn, account, starting_units)
        prior = await conn.fetchrow(
            "SELECT id, account, amount, balance_after FROM credit_ledger WHERE idempotency_key = $1",
            idempotency_key)
        if prior is not None:
            if prior["account"] != account or prior["amount"] != units:
                raise IdempotencyConflict(
                    f"idempotency_key {idempotency_key!r} was already used for a different grant")
            return GrantResult(prior["id"], prior["account"], prior["amount"], prior["balance_after"], None, True)
        row = await conn.fetchrow(
            "UPDATE credit_accounts SET balance = balance + $2, version = version + 1, updated_at = now() "
            "WHERE account = $1 RETURNING balance, version", account, units)
        if row is None:
            raise UnknownAccount(account)
        ledger_id = await conn.fetchval(
            "INSERT INTO credit_ledger (account, kind, delta, amount, idempotency_key, balance_after, note) "
            "VALUES ($1, 'grant', $2, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id",
            account, units, idempotency_key, row["balance"], note)
        if ledger_id is None:  # lost a race with the same key: undo by raising, then report the winner
            raise IdempotencyConflict("retry")
        return GrantResult(ledger_id, account, units, row["balance"], row["version"], False)


async def balance(conn: asyncpg.Connection, account: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT a.balance, a.version, COALESCE((SELECT sum(amount) FROM credit_holds h "
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
        "SELECT h.id, h.account, h.charged, l.delta FROM credit_holds h "
        "LEFT JOIN credit_ledger l ON l.hold_id = h.id AND l.kind = 'settle' "
        "WHERE h.status = 'settled' AND (l.id IS NULL OR l.delta <> -h.charged)")
    for r in rows:
        problems.append(f"hold {r['id']} ({r['account']}): settled for {r['charged']} but ledger says {r['delta']}")
    rows = await conn.fetch(
        "SELECT l.hold_id, l.account FROM credit_ledger l LEFT JOIN credit_holds h ON h.id = l.hold_id "
        "WHERE l.kind = 'settle' AND (h.id IS NULL OR h.status <> 'settled')")
    for r in rows:
        problems.append(f"ledger settle for hold {r['hold_id']} ({r['account']}) without a settled hold")
    return problems


Release = tuple[str, str, "int | None", "int | None"]  # (account, hold id, balance, version)


async def apply_batch(conn: asyncpg.Connection, holds: list[HoldOp], settles: list[tuple[HoldOp, int]],
                      voids: list[HoldOp], starting_units: int) -> list[Release]:
    """Hold rows, settles and voids of one writer batch: one call of ``credits_apply_batch``.

    The function (migration ``20261123000500_credits_apply_batch``, where its exactly-once gates
    are spelled out) runs the batch's statements server-side in one transaction, so a batch costs
    one round trip instead of about nine — what a flush cost the proxy's event loop was mostly
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
        "SELECT out_account, out_balance, out_version FROM credits_apply_batch("
        "$1::text[], $2::text[], $3::text[], $4::bigint[], $5::float8[], $6::text[], $7::bigint[], "
        "$8::text[], $9::bigint)",
        [h.id for h in every.values()], [h.call_id for h in every.values()],
        [h.account for h in every.values()], [h.amount for h in every.values()],
        [h.ts for h in every.values()], list(first), list(first.values()), void_ids, starting_units)
    finals = {r["out_account"]: (r["out_balance"], r["out_version"]) for r in rows}
    releases: list[Release] = []
    for h, _ in settles:
        bal, ver = finals.get(h.account, (None, None))
        releases.append((h.account, h.id, bal, ver))
    releases.extend((h.account, h.id, None, None) for h in voids)
    return releases
