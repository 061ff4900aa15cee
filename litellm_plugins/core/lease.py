"""A Redis lease: one holder at a time across workers and proxies for a background job.

(The health prober uses the same two scripts with its own bookkeeping.)

``SET NX PX`` with an owner token, renewed only by its owner (a Lua compare-and-expire) and
released only by its owner; a holder that dies (kill -9) is replaced once the TTL runs out.
A lease is not a fence: a holder paused longer than its TTL may overlap the next one for a moment,
so what runs under it must stay correct when run twice (billing: receivers dedupe by event id).
"""

from __future__ import annotations

import os
import socket
import uuid

import redis.asyncio as aioredis

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease:
    def __init__(self, redis: aioredis.Redis, key: str, ttl_seconds: float) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)
        self.holding = False

    async def acquire(self) -> bool:
        """Take or keep the lease; True while this worker holds it."""
        if self.holding and await self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
            return True
        self.holding = bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.holding

    async def release(self) -> None:
        if self.holding:
            self.holding = False
            await self._release(keys=[self.key], args=[self.token])
