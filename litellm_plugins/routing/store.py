"""Accounts' own default power levels (``account_defaults``), held in each worker's memory.

The routing hook runs on every request and must not touch Postgres, so every worker keeps the
whole table (one short row per account that ever saved a default) in a dict, reloads it when the
table's newest ``updated_at`` moves (checked every ``account_defaults_refresh_s``; one tiny indexed
query), and applies its own writes at once. A default saved through one worker is therefore seen
by the others within that interval; lookups are a dict ``get``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import asyncpg

log = logging.getLogger("litellm_plugins.routing")


async def fetch_all(conn: asyncpg.Connection) -> dict[str, str]:
    return {r["account"]: r["default_level"] for r in await conn.fetch(
        "SELECT account, default_level FROM account_defaults")}


async def newest(conn: asyncpg.Connection) -> tuple[datetime | None, int]:
    row = await conn.fetchrow("SELECT max(updated_at) AS newest, count(*) AS n FROM account_defaults")
    return row["newest"], row["n"]


async def save(conn: asyncpg.Connection, account: str, level: str | None, actor: str | None) -> None:
    if level is None:
        await conn.execute("DELETE FROM account_defaults WHERE account = $1", account)
        return
    await conn.execute(
        "INSERT INTO account_defaults (account, default_level, updated_by, updated_at) VALUES ($1, $2, $3, now()) "
        "ON CONFLICT (account) DO UPDATE SET default_level = EXCLUDED.default_level, "
        "updated_by = EXCLUDED.updated_by, updated_at = now()", account, level, actor)


async def get(conn: asyncpg.Connection, account: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT default_level, updated_by, updated_at FROM account_defaults WHERE account = $1",
                              account)
    return dict(row) if row else None


class AccountDefaults:
    """This worker's copy of ``account_defaults``; ``level(account)`` is the only hot-path call."""

    def __init__(self) -> None:
        self._levels: dict[str, str] = {}
        self._version: tuple[datetime | None, int] | None = None

    @property
    def active(self) -> bool:
        """False while no account saved a default: the hook then skips even the account lookup."""
        return bool(self._levels)

    def level(self, account: str | None) -> str | None:
        return self._levels.get(account) if account is not None and self._levels else None

    def put(self, account: str, level: str | None) -> None:
        levels = dict(self._levels)
        if level is None:
            levels.pop(account, None)
        else:
            levels[account] = level
        self._levels = levels  # swap, never mutate: the hook may read at any point

    async def refresh(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            version = await newest(conn)
            if version != self._version:
                self._levels = await fetch_all(conn)
                self._version = version

    async def keep_fresh(self, pool: asyncpg.Pool, interval_s: float) -> None:
        """Supervised job (``routing_account_defaults`` in ``/plugins/ready``)."""
        while True:
            try:
                await self.refresh(pool)
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                log.warning("routing: account defaults not refreshed (%s); keeping the last copy", type(exc).__name__)
            await asyncio.sleep(interval_s)
