"""One asyncpg pool per worker, bound to the worker's event loop.

All our tables live in the ``litellm_plugins`` Postgres schema: LiteLLM's own Prisma sanity check
drops unknown tables in ``public`` (docs/litellm.md fact 20).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

SCHEMA = "litellm_plugins"
# search_path pins our schema so SQL never lands in LiteLLM's `public` by accident.
SERVER_SETTINGS = {"search_path": SCHEMA, "application_name": "litellm-plugins"}


class DatabaseUnavailable(Exception):
    """Postgres cannot be reached; the message says where, never with the password."""


def redact_dsn(dsn: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` for messages."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


async def connect(dsn: str, timeout: float = 5.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=timeout)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect to Postgres at {redact_dsn(dsn)}: {exc}") from None


@contextlib.asynccontextmanager
async def schema_connection(dsn: str, timeout: float = 5.0) -> AsyncIterator[asyncpg.Connection]:
    """One connection with our schema on its search_path, closed on exit (CLI commands)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout, server_settings=SERVER_SETTINGS)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect to Postgres at {redact_dsn(dsn)}: {exc}") from None
    try:
        yield conn
    finally:
        await conn.close()


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, timeout=5.0, command_timeout=30.0,
            server_settings=SERVER_SETTINGS,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect to Postgres at {redact_dsn(dsn)}: {exc}") from None
