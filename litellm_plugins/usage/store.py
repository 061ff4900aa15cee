"""Queries of the ``usage_log`` table: batched upsert, filtered query, streamed export, summaries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

COLUMNS = ("id", "call_id", "account", "user_id", "team_id", "key_hash", "requested_model", "power_level",
           "model_group", "deployment", "provider", "byok", "prompt_tokens", "completion_tokens", "cost_usd",
           "credits_charged", "latency_ms", "stream", "status", "error_type", "created_at")
# Which outcome wins when one request reports several (a failed attempt, then a successful retry).
STATUS_RANK = {"success": 3, "failure": 2, "rejected": 1}

_TYPES = {"byok": "bool", "stream": "bool", "prompt_tokens": "int4", "completion_tokens": "int4",
          "cost_usd": "numeric", "credits_charged": "int8", "latency_ms": "int4", "created_at": "float8"}
# One statement per batch (unnest of column arrays): a 500-row batch is one round trip.
_INSERT = (
    f"INSERT INTO usage_log ({', '.join(COLUMNS)}) SELECT "
    + ", ".join("to_timestamp(created_at)" if c == "created_at" else c for c in COLUMNS)
    + " FROM unnest("
    + ", ".join(f"${i + 1}::{_TYPES.get(c, 'text')}[]" for i, c in enumerate(COLUMNS))
    + f") AS t({', '.join(COLUMNS)}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:] if c != "created_at")
    + " WHERE EXCLUDED.status = 'success' AND usage_log.status <> 'success'"
)


def dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        prev = best.get(row["id"])
        if prev is None or STATUS_RANK.get(row["status"], 0) > STATUS_RANK.get(prev["status"], 0):
            best[row["id"]] = row
    return list(best.values())


async def insert_rows(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    unique = dedupe(rows)
    columns: list[list[Any]] = []
    for c in COLUMNS:
        if c == "cost_usd":
            columns.append([Decimal(str(r.get(c) or 0)) for r in unique])
        elif c == "created_at":
            columns.append([float(r.get("ts") or 0) for r in unique])
        else:
            columns.append([r.get(c) for r in unique])
    await conn.execute(_INSERT, *columns)


@dataclass(frozen=True)
class UsageFilter:
    account: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    power_level: str | None = None
    byok: bool | None = None
    status: str | None = None
    provider: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def add(sql: str, value: Any) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        if self.account is not None:
            add("account = ?", self.account)
        if self.since is not None:
            add("created_at >= ?", self.since)
        if self.until is not None:
            add("created_at < ?", self.until)
        if self.model is not None:
            add("(model_group = ? OR requested_model = ?)", self.model)
        if self.power_level is not None:
            add("power_level = ?", self.power_level)
        if self.byok is not None:
            add("byok = ?", self.byok)
        if self.status is not None:
            add("status = ?", self.status)
        if self.provider is not None:
            add("provider = ?", self.provider)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


async def query(conn: asyncpg.Connection, flt: UsageFilter, limit: int, offset: int) -> list[dict[str, Any]]:
    where, args = flt.where()
    rows = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM usage_log{where} ORDER BY created_at DESC, id "
        f"LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}", *args, limit, offset)
    return [dict(r) for r in rows]


async def stream(pool: asyncpg.Pool, flt: UsageFilter, batch: int = 500) -> AsyncIterator[dict[str, Any]]:
    """Rows through a server-side cursor: an export of millions of rows never sits in memory."""
    where, args = flt.where()
    async with pool.acquire() as conn:
        async with conn.transaction(readonly=True):
            cursor = conn.cursor(f"SELECT {', '.join(COLUMNS)} FROM usage_log{where} "
                                 "ORDER BY created_at, id", *args, prefetch=batch)
            async for row in cursor:
                yield dict(row)


SUMMARY_KEYS = {"provider": "provider", "model": "model_group", "power_level": "power_level",
                "account": "account", "status": "status"}


async def summary(conn: asyncpg.Connection, flt: UsageFilter, by: str) -> list[dict[str, Any]]:
    column = SUMMARY_KEYS[by]
    where, args = flt.where()
    rows = await conn.fetch(
        f"SELECT {column} AS key, count(*) AS requests, "
        "count(*) FILTER (WHERE status = 'success') AS succeeded, "
        "COALESCE(sum(prompt_tokens), 0)::bigint AS prompt_tokens, "
        "COALESCE(sum(completion_tokens), 0)::bigint AS completion_tokens, "
        "COALESCE(sum(cost_usd), 0) AS cost_usd, COALESCE(sum(credits_charged), 0)::bigint AS credits_charged, "
        f"percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_latency_ms "
        f"FROM usage_log{where} GROUP BY {column} ORDER BY requests DESC, key", *args)
    return [dict(r) for r in rows]


BUCKETS = ("hour", "day", "week", "month")
TOP_N = 10


async def dashboard(conn: asyncpg.Connection, flt: UsageFilter, bucket: str, tops: bool) -> dict[str, Any]:
    """Everything the console's usage screen draws, in one read-only transaction: totals, a time
    series (``date_trunc(bucket)`` in UTC), per level / provider / model and, for an all-accounts
    view, the top accounts. Each aggregate is one scan of the filtered rows through the
    ``(account, created_at)`` or ``(created_at)`` index."""
    where, args = flt.where()
    agg = ("count(*) AS requests, count(*) FILTER (WHERE status = 'success') AS succeeded, "
           "count(*) FILTER (WHERE byok) AS byok_requests, "
           "COALESCE(sum(credits_charged), 0)::bigint AS credits_charged, COALESCE(sum(cost_usd), 0) AS cost_usd, "
           "COALESCE(sum(prompt_tokens), 0)::bigint AS prompt_tokens, "
           "COALESCE(sum(completion_tokens), 0)::bigint AS completion_tokens, "
           "percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_latency_ms")
    out: dict[str, Any] = {}
    async with conn.transaction(readonly=True):
        out["totals"] = dict(await conn.fetchrow(f"SELECT {agg} FROM usage_log{where}", *args))
        out["series"] = [dict(r) for r in await conn.fetch(
            f"SELECT date_trunc('{bucket}', created_at, 'UTC') AS t, {agg} FROM usage_log{where} "
            "GROUP BY 1 ORDER BY 1", *args)]
        for name, column in (("by_level", "power_level"), ("by_provider", "provider"), ("by_model", "model_group")):
            out[name] = [dict(r) for r in await conn.fetch(
                f"SELECT {column} AS key, {agg} FROM usage_log{where} GROUP BY 1 "
                "ORDER BY credits_charged DESC, requests DESC, 1 LIMIT 50", *args)]
        if tops:
            out["top_accounts"] = [dict(r) for r in await conn.fetch(
                f"SELECT account AS key, {agg} FROM usage_log{where} GROUP BY 1 "
                f"ORDER BY credits_charged DESC, requests DESC, 1 LIMIT {TOP_N}", *args)]
    return out
