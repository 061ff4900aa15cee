"""Redis fast path of the credit ledger: balances, held totals and open holds, changed only by Lua.

Per account ``<prefix>credits:acct:<account>`` (hash: ``balance``, ``held``, ``version``) and
``<prefix>credits:holds:<account>`` (hash: hold id -> ``"<amount>:<unix ts>"``). Each operation is
one script, so check-and-hold is atomic across every worker and proxy instance sharing this Redis.
``<prefix>credits:journal`` (hash: ``<op>:<hold id>`` -> JSON) holds each settle / void / usage
record from the moment LiteLLM reports the call until the writer has it in Postgres: a worker that
dies in between (kill -9) leaves its records there, and the reconciler writes them.

Redis is a cache of Postgres, never the book of record: a missing account is rebuilt from Postgres
(balance + pending holds) by a load-if-absent script; a balance is only ever overwritten by a newer
Postgres ``version``, so the cache converges whatever order settles and reloads arrive in.
Lua numbers are doubles: comparisons are exact up to 2^53 units (about 9 billion credits).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from litellm_plugins.core.redis_send import SendOnlyRedis

log = logging.getLogger("litellm_plugins.credits")
HOLD_TIMEOUT_SECONDS = 2.0  # as the redis-py client's socket timeout (core/redis.py)

HOLD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, 0} end
local bal = tonumber(redis.call('HGET', KEYS[1], 'balance'))
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {1, bal, held} end
local amt = tonumber(ARGV[2])
if bal - held < amt then return {0, bal, held} end
if amt > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'held', amt)
end
return {1, bal, held + amt}
"""

LOAD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV, 3 do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i+1] .. ':' .. ARGV[i+2])
end
local held = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do
  held = held + tonumber(string.match(v, '^(%-?%d+)'))
end
redis.call('HSET', KEYS[1], 'balance', ARGV[1], 'held', held, 'version', ARGV[2])
return 1
"""

_RELEASE_FN = """
local function release(acct, holds, id, bal, ver)
  local e = redis.call('HGET', holds, id)
  local exists = redis.call('EXISTS', acct) == 1
  if e then
    local amt = tonumber(string.match(e, '^(%-?%d+)'))
    redis.call('HDEL', holds, id)
    if exists then redis.call('HINCRBY', acct, 'held', -amt) end
  end
  if bal ~= '' and exists then
    local v = tonumber(redis.call('HGET', acct, 'version') or '-1')
    if tonumber(ver) > v then
      redis.call('HSET', acct, 'balance', bal, 'version', ver)
      return 2
    end
  end
  return 1
end
"""

RELEASE = _RELEASE_FN + "return release(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])"

# A writer batch in one call: delete its journal fields (KEYS[1]; ARGV[1] = how many, then the
# fields), then release each hold: KEYS[2k], KEYS[2k+1] = account and holds keys, three ARGV each.
RELEASE_BATCH = _RELEASE_FN + """
local nf = tonumber(ARGV[1])
for i = 2, nf + 1 do redis.call('HDEL', KEYS[1], ARGV[i]) end
local k = 2
for i = nf + 2, #ARGV, 3 do
  release(KEYS[k], KEYS[k + 1], ARGV[i], ARGV[i + 1], ARGV[i + 2])
  k = k + 2
end
return 1
"""

ADJUST = """
local e = redis.call('HGET', KEYS[2], ARGV[1])
local old = 0
if e then old = tonumber(string.match(e, '^(%-?%d+)')) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'held', tonumber(ARGV[2]) - old)
end
return 1
"""


JOURNAL = """
if ARGV[1] ~= '' then
  local e = redis.call('HGET', KEYS[2], ARGV[2])
  if e then
    local old = tonumber(string.match(e, '^(%-?%d+)'))
    local exists = redis.call('EXISTS', KEYS[1]) == 1
    if ARGV[1] == 'void' then
      redis.call('HDEL', KEYS[2], ARGV[2])
      if exists then redis.call('HINCRBY', KEYS[1], 'held', -old) end
    else
      redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ':' .. (string.match(e, ':(%d+)$') or ARGV[4]))
      if exists then redis.call('HINCRBY', KEYS[1], 'held', tonumber(ARGV[3]) - old) end
    end
  end
end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 1
"""


class CreditCache:
    def __init__(self, redis: aioredis.Redis, prefix: str, sender: SendOnlyRedis | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.sender = sender  # the response path's journal (send_journal)
        self._hold = redis.register_script(HOLD)
        self._load = redis.register_script(LOAD)
        self._release = redis.register_script(RELEASE)
        self._release_batch = redis.register_script(RELEASE_BATCH)
        self._adjust = redis.register_script(ADJUST)
        self._journal = redis.register_script(JOURNAL)

    def acct_key(self, account: str) -> str:
        return f"{self.prefix}credits:acct:{account}"

    def holds_key(self, account: str) -> str:
        return f"{self.prefix}credits:holds:{account}"

    def journal_key(self) -> str:
        return f"{self.prefix}credits:journal"

    def lease_key(self, name: str) -> str:
        return f"{self.prefix}credits:lease:{name}"

    def account_from_holds_key(self, key: bytes | str) -> str:
        text = key.decode() if isinstance(key, bytes) else key
        return text[len(self.holds_key("")):]

    def account_from_acct_key(self, key: bytes | str) -> str:
        text = key.decode() if isinstance(key, bytes) else key
        return text[len(self.acct_key("")):]

    async def hold(self, account: str, hold_id: str, amount: int) -> tuple[int, int, int]:
        """-> (status, balance, held): status 1 placed (or already placed), 0 insufficient, -1 not cached.

        Through the send-only connection when it is up: one write and one await for the answer.
        redis-py's call path awaits several times (pool, connection check, drain, answer), and at
        every await the event loop may first run other ready work; here it is the one wait that
        cannot be avoided. Redis-py (which also loads a forgotten script) otherwise.
        """
        keys = [self.acct_key(account), self.holds_key(account)]
        args = [hold_id, amount, int(time.time())]
        res = None
        if self.sender is not None and self.sender.connected:
            try:
                async with asyncio.timeout(HOLD_TIMEOUT_SECONDS):
                    res = await self.sender.request("EVALSHA", self._hold.sha, len(keys), *keys, *args)
            except (TimeoutError, ConnectionError) as exc:
                raise RedisConnectionError(f"credits hold: {type(exc).__name__}") from None
            if isinstance(res, hiredis.ReplyError):
                if not str(res).startswith("NOSCRIPT"):
                    raise ResponseError(str(res))
                res = None
        if res is None:
            res = await self._hold(keys=keys, args=args)
        return int(res[0]), int(res[1]), int(res[2])

    async def load(self, account: str, balance: int, version: int,
                   holds: Iterable[tuple[str, int, int]]) -> bool:
        args: list[object] = [balance, version]
        for hold_id, amount, ts in holds:
            args += [hold_id, amount, ts]
        return bool(await self._load(keys=[self.acct_key(account), self.holds_key(account)], args=args))

    async def release(self, account: str, hold_id: str, balance: int | None = None,
                      version: int | None = None, pipe: object | None = None) -> object:
        args = [hold_id, "" if balance is None else balance, "" if version is None else version]
        return await self._release(keys=[self.acct_key(account), self.holds_key(account)], args=args,
                                   client=pipe)

    async def release_batch(self, releases: Iterable[tuple[str, str, int | None, int | None]],
                            journal_fields: list[str]) -> None:
        """After a writer batch reached Postgres: its journal entries and holds go, the new balances
        come in — one script call per batch (a pipeline of one call per hold cost a round trip more,
        for SCRIPT EXISTS, and ~30 us of client work per hold)."""
        keys: list[str] = [self.journal_key()]
        args: list[object] = [len(journal_fields), *journal_fields]
        for account, hold_id, balance, version in releases:
            keys += [self.acct_key(account), self.holds_key(account)]
            args += [hold_id, "" if balance is None else balance, "" if version is None else version]
        await self._release_batch(keys=keys, args=args)

    async def adjust(self, account: str, hold_id: str, amount: int) -> None:
        await self._adjust(keys=[self.acct_key(account), self.holds_key(account)],
                           args=[hold_id, amount, int(time.time())])

    async def journal(self, account: str, hold_id: str, mode: str, amount: int,
                      entries: Iterable[tuple[str, str]]) -> None:
        """Write records to the shared journal and, in the same script, shrink an open hold to its
        real charge (``mode="settle"``) or drop it (``"void"``) so the balance is right before Postgres is."""
        args: list[object] = [mode, hold_id, amount, int(time.time())]
        for field, value in entries:
            args += [field, value]
        await self._journal(keys=[self.acct_key(account), self.holds_key(account), self.journal_key()], args=args)

    def send_journal(self, account: str, hold_id: str, mode: str, amount: int,
                     entries: Iterable[tuple[str, str]]) -> bool:
        """``journal`` without awaiting anything: handed to the kernel before this returns.

        For the response path, where a kill -9 must not lose the call but any await would let other
        tasks run before the response leaves (``core.redis_send``). False if the send-only
        connection is down: the caller then uses ``journal``. A Redis that forgot the script
        (restart, SCRIPT FLUSH) answers NOSCRIPT; the call is then re-sent with the script itself.
        """
        if self.sender is None:
            return False
        keys = [self.acct_key(account), self.holds_key(account), self.journal_key()]
        args: list[object] = [mode, hold_id, amount, int(time.time())]
        for field, value in entries:
            args += [field, value]

        def failed(error: Exception) -> None:
            if str(error).startswith("NOSCRIPT") and self.sender is not None and self.sender.send(
                    "EVAL", JOURNAL, len(keys), *keys, *args, on_error=failed):
                return
            log.warning("credits: journal write refused by Redis (%s); the record is still queued for "
                        "Postgres", error)

        return self.sender.send("EVALSHA", self._journal.sha, len(keys), *keys, *args, on_error=failed)

    async def snapshot(self, account: str) -> tuple[int, int, int] | None:
        values = await self.redis.hmget(self.acct_key(account), "balance", "held", "version")
        if values[0] is None:
            return None
        return int(values[0]), int(values[1] or 0), int(values[2] or 0)
