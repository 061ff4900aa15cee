"""Postgres side of the billing export: read the outbox after a cursor, move cursors, dead letters.

Rows are read in ``(txid, seq)`` order and only below the oldest transaction still running
(``pg_snapshot_xmin``): every row of that set is committed for good, and no row can join it later
behind a cursor (migration ``20261202003000_billing_outbox``). A charge is read with its usage row
(tokens, USD cost, model group, power level, BYOK), written by the credits writer right after the
ledger batch; a charge whose usage row is missing waits for it up to ``usage_wait_seconds``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

# The outbox row as an exporter sees it. ``units`` are credit units (1 credit = 1,000,000 units).
_SELECT = (
    "SELECT o.seq, o.txid, o.event_id, o.account, o.kind, o.units, o.balance_after, o.data, o.created_at, "
    "u.id IS NOT NULL AS has_usage, u.model_group, u.power_level, u.byok, u.prompt_tokens, "
    "u.completion_tokens, u.cost_usd, u.billing_customer "
    "FROM billing_outbox o LEFT JOIN usage_log u ON u.id = o.hold_id ")
_SETTLED = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


@dataclass(frozen=True)
class Event:
    seq: int
    txid: int
    event_id: str
    account: str
    kind: str  # "charge" | "grant" | "credits_exhausted" | "provider_down" | "provider_up"
    units: int
    created_at: datetime
    balance_after: int | None = None  # the account's balance after this ledger entry
    data: dict[str, Any] | None = None  # provider_*: model_id, model_group, provider, state, reason;
    # credits_exhausted: call_id, requested_model
    has_usage: bool = False
    model_group: str | None = None
    power_level: str | None = None
    byok: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    billing_customer: str | None = None  # the caller's metadata billing_customer_id (usage row)

    @property
    def customer(self) -> str:
        """The receiver's customer / subscription id (docs/billing.md, Mappings): the charge's
        ``billing_customer_id`` from key / team metadata, recorded by credits with the usage row,
        else the account id."""
        return self.billing_customer or self.account


def _event(row: asyncpg.Record) -> Event:
    return Event(seq=row["seq"], txid=row["txid"], event_id=row["event_id"], account=row["account"],
                 kind=row["kind"], units=row["units"], created_at=row["created_at"],
                 balance_after=row["balance_after"], data=json.loads(row["data"]) if row["data"] else None,
                 has_usage=row["has_usage"], model_group=row["model_group"], power_level=row["power_level"],
                 byok=bool(row["byok"]), prompt_tokens=row["prompt_tokens"] or 0,
                 completion_tokens=row["completion_tokens"] or 0,
                 cost_usd=row["cost_usd"] if row["cost_usd"] is not None else Decimal(0),
                 billing_customer=row["billing_customer"])


async def cursor(conn: asyncpg.Connection, exporter: str) -> tuple[int, int]:
    row = await conn.fetchrow("SELECT last_txid, last_seq FROM billing_cursors WHERE exporter = $1", exporter)
    return (row["last_txid"], row["last_seq"]) if row else (0, 0)


async def next_batch(conn: asyncpg.Connection, after: tuple[int, int], limit: int,
                     usage_wait_seconds: float) -> list[Event]:
    """Up to ``limit`` events after the cursor, stopping before the first charge still waiting for
    its usage row (order is kept: nothing after it is sent before it)."""
    rows = await conn.fetch(
        _SELECT.replace("FROM", ", (o.kind = 'charge' AND u.id IS NULL AND "
                                "o.created_at > now() - make_interval(secs => $4)) AS waiting FROM", 1)
        + f"WHERE (o.txid, o.seq) > ($1, $2) AND o.txid < {_SETTLED} "
        "ORDER BY o.txid, o.seq LIMIT $3", after[0], after[1], limit, float(usage_wait_seconds))
    events: list[Event] = []
    for row in rows:
        if row["waiting"]:
            break
        events.append(_event(row))
    return events


async def advance(conn: asyncpg.Connection, exporter: str, to: tuple[int, int], count: int) -> None:
    """Move the cursor forward only (a sender that lost its lease cannot move it back)."""
    await conn.execute(
        "INSERT INTO billing_cursors AS c (exporter, last_txid, last_seq, exported) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (exporter) DO UPDATE SET last_txid = EXCLUDED.last_txid, last_seq = EXCLUDED.last_seq, "
        "exported = c.exported + EXCLUDED.exported, updated_at = now() "
        "WHERE (c.last_txid, c.last_seq) < (EXCLUDED.last_txid, EXCLUDED.last_seq)",
        exporter, to[0], to[1], count)


async def dead_letter(conn: asyncpg.Connection, exporter: str, events: list[Event], reason: str) -> None:
    await conn.executemany(
        "INSERT INTO billing_dead_letters (exporter, seq, event_id, reason) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (exporter, seq) DO UPDATE SET status = 'dead', reason = EXCLUDED.reason, updated_at = now()",
        [(exporter, e.seq, e.event_id, reason[:500]) for e in events])


async def replay_batch(conn: asyncpg.Connection, exporter: str, limit: int) -> list[Event]:
    """Dead letters an operator asked to replay (status ``replay``), oldest first."""
    rows = await conn.fetch(
        _SELECT + "JOIN billing_dead_letters d ON d.seq = o.seq "
        "WHERE d.exporter = $1 AND d.status = 'replay' ORDER BY d.id LIMIT $2", exporter, limit)
    return [_event(r) for r in rows]


async def mark_replayed(conn: asyncpg.Connection, exporter: str, seqs: list[int]) -> None:
    await conn.execute("UPDATE billing_dead_letters SET status = 'replayed', updated_at = now() "
                       "WHERE exporter = $1 AND seq = ANY($2::bigint[]) AND status = 'replay'", exporter, seqs)


async def dead_letters(conn: asyncpg.Connection, exporter: str | None, status: str | None, limit: int,
                       before_id: int | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT d.id, d.exporter, d.seq, d.event_id, d.reason, d.status, d.created_at, d.updated_at, "
        "o.account, o.kind, o.units, o.created_at AS event_at FROM billing_dead_letters d "
        "LEFT JOIN billing_outbox o ON o.seq = d.seq "  # a replayed one's event may be pruned since
        "WHERE ($1::text IS NULL OR d.exporter = $1) AND ($2::text IS NULL OR d.status = $2) "
        "AND ($3::bigint IS NULL OR d.id < $3) ORDER BY d.id DESC LIMIT $4", exporter, status, before_id, limit)
    return [dict(r) for r in rows]


async def request_replay(conn: asyncpg.Connection, ids: list[int] | None, exporter: str | None) -> int:
    """Mark dead letters for replay (all of an exporter's when ``ids`` is None); returns how many."""
    result = await conn.execute(
        "UPDATE billing_dead_letters SET status = 'replay', updated_at = now() WHERE status = 'dead' "
        "AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[])) AND ($2::text IS NULL OR exporter = $2)",
        ids, exporter)
    return int(result.split()[-1])


async def lag(conn: asyncpg.Connection, exporters: list[str]) -> dict[str, dict[str, Any]]:
    """Per exporter: events not yet exported (backlog), age in seconds of the oldest one (lag),
    events exported, dead letters waiting."""
    rows = await conn.fetch(
        "SELECT e.name, COALESCE(c.exported, 0) AS exported, "
        "(SELECT count(*) FROM billing_outbox o WHERE (o.txid, o.seq) > (COALESCE(c.last_txid, 0), "
        " COALESCE(c.last_seq, 0))) AS backlog, "
        "(SELECT extract(epoch FROM now() - min(o.created_at)) FROM billing_outbox o "
        " WHERE (o.txid, o.seq) > (COALESCE(c.last_txid, 0), COALESCE(c.last_seq, 0))) AS lag_seconds, "
        "(SELECT count(*) FROM billing_dead_letters d WHERE d.exporter = e.name AND d.status <> 'replayed') "
        " AS dead_letters "
        "FROM unnest($1::text[]) AS e(name) LEFT JOIN billing_cursors c ON c.exporter = e.name", exporters)
    return {r["name"]: {"exported": r["exported"], "backlog": r["backlog"],
                        "lag_seconds": round(float(r["lag_seconds"] or 0), 3),
                        "dead_letters": r["dead_letters"]} for r in rows}


async def prune(conn: asyncpg.Connection, exporters: list[str], older_than_days: float, limit: int) -> int:
    """Delete up to ``limit`` outbox rows every listed exporter has acknowledged (behind each cursor),
    older than ``older_than_days``, that no dead letter still needs. Nothing while an exporter has
    no cursor yet. Returns how many were deleted."""
    result = await conn.execute(
        "WITH mine AS (SELECT c.last_txid, c.last_seq FROM billing_cursors c WHERE c.exporter = ANY($1::text[])), "
        "floor AS (SELECT m.last_txid, m.last_seq FROM mine m "
        "          WHERE (SELECT count(*) FROM mine) = cardinality($1::text[]) "
        "          ORDER BY m.last_txid, m.last_seq LIMIT 1), "
        "doomed AS (SELECT o.seq FROM billing_outbox o, floor f "
        "           WHERE (o.txid, o.seq) <= (f.last_txid, f.last_seq) "
        "           AND o.created_at < now() - make_interval(secs => $2) "
        "           AND NOT EXISTS (SELECT 1 FROM billing_dead_letters d WHERE d.seq = o.seq "
        "                           AND d.status <> 'replayed') "
        "           ORDER BY o.txid, o.seq LIMIT $3) "
        "DELETE FROM billing_outbox o USING doomed WHERE o.seq = doomed.seq",
        exporters, older_than_days * 86400.0, limit)
    return int(result.split()[-1])
