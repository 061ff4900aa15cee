"""The shared Redis client (asyncio), one per worker; Redis is a fast path, never the book of record."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError


class RedisUnavailable(Exception):
    pass


def redact_url(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def create_client(url: str, max_connections: int = 256) -> aioredis.Redis:
    """A blocking pool: past ``max_connections`` a caller waits (up to 2 s) for a free connection
    instead of failing with MaxConnectionsError, which a burst of concurrent requests would hit."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=2.0, socket_connect_timeout=2.0, socket_timeout=2.0,
        health_check_interval=30, decode_responses=False)
    return aioredis.Redis(connection_pool=pool)


async def check(client: aioredis.Redis, url: str) -> None:
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
