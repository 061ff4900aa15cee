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
from collections.abc import Callable, Iterable

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import ResponseError

from litellm_plugins.core.redis_send import SendOnlyRedis

log = logging.getLogger("litellm_plugins.credits")
HOLD_TIMEOUT_SECONDS = 2.0  # as the redis-py client's socket timeout (core/redis.py)

# Allowance and caps (ARGV 8-15, docs/credits.md "Allowances and buckets"): the allowance of the
# request's period is applied first, as credits_ensure_allowance applies it in Postgres (a later
# period: what is left expires, the new amount is added; the same period with a larger amount: the
# difference is added; otherwise nothing), so the balance checked is this period's. An unlimited
# allowance of the open period skips the balance check. A cap (the tier's, ARGV 13-15, or the
# account's own, 'cd'/'cw'/'cm', whichever is lower) refuses when spent this period (Postgres's
# counter, if it is this period's) + everything held + this hold would pass it: status 2, with the
# cap's index (1 day, 2 week, 3 month) and its amount. A lease on a capped account needs the same
# headroom under every cap as under the balance (a carve checks neither: the lease, counted in
# held, already fits). Postgres is told by the records the writer flushes (their tier), not by
# this script, so a Redis that forgets (FLUSHALL) cannot skip or repeat a refill.
# -> {status, balance, held, lease granted, cap index, cap}
HOLD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, 0, 0, 0, 0} end
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
if ARGV[4] and ARGV[4] ~= '' then
  local old = redis.call('HGET', KEYS[2], ARGV[4])
  if old then
    local rest = tonumber(string.match(old, '^(%-?%d+)'))
    redis.call('HDEL', KEYS[2], ARGV[4])
    if rest ~= 0 then redis.call('HINCRBY', KEYS[1], 'held', -rest) end  -- '-0' is no integer to Redis
    held = held - rest
  end
end
local bal = tonumber(redis.call('HGET', KEYS[1], 'balance'))
local unlimited = false
if ARGV[8] and ARGV[8] ~= '' then
  local ap = redis.call('HGET', KEYS[1], 'ap') or ''
  local amt = tonumber(ARGV[9])
  if ap == '' or (string.sub(ARGV[8], 1, 10) >= string.sub(ap, 1, 10) and ARGV[8] ~= ap) then
    local left = tonumber(redis.call('HGET', KEYS[1], 'al') or '0')
    if left < 0 then left = 0 end
    bal = bal - left + math.max(amt, 0)
    redis.call('HSET', KEYS[1], 'balance', string.format('%d', bal), 'ap', ARGV[8], 'aa', ARGV[9], 'al', ARGV[9])
    ap = ARGV[8]
  elseif ap == ARGV[8] then
    local aa = tonumber(redis.call('HGET', KEYS[1], 'aa') or '0')
    if aa >= 0 and (amt < 0 or amt > aa) then
      local left = tonumber(redis.call('HGET', KEYS[1], 'al') or '0')
      if amt < 0 then
        bal = bal - left
        redis.call('HSET', KEYS[1], 'balance', string.format('%d', bal), 'aa', '-1', 'al', '-1')
      else
        bal = bal + amt - aa
        redis.call('HSET', KEYS[1], 'balance', string.format('%d', bal), 'aa', ARGV[9], 'al', string.format('%d', left + amt - aa))
      end
    end
  end
  unlimited = ap == ARGV[8] and redis.call('HGET', KEYS[1], 'aa') == '-1'
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {1, bal, held, 0, 0, 0} end
local amt = tonumber(ARGV[2])
local room = nil  -- the least any cap leaves after this hold
if ARGV[10] then
  local fields = {{'dk', 'ds', 'cd'}, {'wk', 'ws', 'cw'}, {'mk', 'ms', 'cm'}}
  for i = 1, 3 do
    local f = fields[i]
    local cap = tonumber(ARGV[12 + i] or '')
    local own = tonumber(redis.call('HGET', KEYS[1], f[3]) or '')
    if own and (not cap or own < cap) then cap = own end
    if cap then
      local spent = 0
      if redis.call('HGET', KEYS[1], f[1]) == ARGV[9 + i] then spent = tonumber(redis.call('HGET', KEYS[1], f[2]) or '0') end
      if spent + held + amt > cap then return {2, bal, held, 0, i, cap} end
      if not room or cap - spent - held - amt < room then room = cap - spent - held - amt end
    end
  end
end
if not unlimited and bal - held < amt then return {0, bal, held, 0, 0, 0} end
if amt > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'held', amt)
  held = held + amt
end
local granted = 0
if ARGV[5] and ARGV[5] ~= '' then
  local size = tonumber(ARGV[6])
  local headroom = tonumber(ARGV[7]) * size
  if size > 0 and bal - held - size >= headroom and (not room or room - size >= headroom) then
    redis.call('HSET', KEYS[2], ARGV[5], ARGV[6] .. ':' .. ARGV[3])
    redis.call('HINCRBY', KEYS[1], 'held', size)
    granted = size
  end
end
return {1, bal, held, granted, 0, 0}
"""

# A hold carved from this worker's lease (``lease.Leases``), sent without waiting for the answer:
# the lease already counts in ``held``, so the amount moves from the lease entry to the hold's own
# entry and ``held`` does not change. If the lease is gone (FLUSHALL, a Redis restart, returned or
# expired) the hold is placed unchecked -- the request is already on its way to the provider -- and
# the answer tells the worker to stop using the lease. Without the account hash (flushed) only the
# hold entry is written; the load-if-absent script counts it when the account is rebuilt.
# -> {status (1 carved, 0 lease gone, 2 already placed), balance, held} (balance/held 0: not cached)
CARVE = """
local amt = tonumber(ARGV[3])
local exists = redis.call('EXISTS', KEYS[1]) == 1
local status = 2
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  status = 0
  local e = redis.call('HGET', KEYS[2], ARGV[1])
  local left = e and tonumber(string.match(e, '^(%-?%d+)'))
  if left and left >= amt then
    redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', left - amt) .. ':' .. (string.match(e, ':(%d+)$') or ARGV[4]))
    status = 1
  elseif exists then
    redis.call('HINCRBY', KEYS[1], 'held', amt)
  end
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ':' .. ARGV[4])
end
if not exists then return {status, 0, 0} end
return {status, tonumber(redis.call('HGET', KEYS[1], 'balance')), tonumber(redis.call('HGET', KEYS[1], 'held') or '0')}
"""

# The balance API's view, read atomically: {balance, held, of which leases} (nil if not cached).
# Leases (lease.py) are set aside, not spent by any request; the API shows them apart from ``held``.
LEASED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local leased = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  if string.sub(entries[i], 1, 6) == 'lease:' then
    leased = leased + tonumber(string.match(entries[i + 1], '^(%-?%d+)'))
  end
end
return {tonumber(redis.call('HGET', KEYS[1], 'balance')), tonumber(redis.call('HGET', KEYS[1], 'held') or '0'), leased}
"""

# The state fields Postgres sends with a balance (credits_state: allowance, spend counters, the
# account's caps) as "k=v;...": an empty value deletes the field.
_STATE_FN = """
local function apply_state(acct, state)
  if not state or state == '' then return end
  for k, v in string.gmatch(state, '(%a+)=([^;]*)') do
    if v == '' then redis.call('HDEL', acct, k) else redis.call('HSET', acct, k, v) end
  end
end
"""

LOAD = _STATE_FN + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 4, #ARGV, 3 do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i+1] .. ':' .. ARGV[i+2])
end
local held = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do
  held = held + tonumber(string.match(v, '^(%-?%d+)'))
end
redis.call('HSET', KEYS[1], 'balance', ARGV[1], 'held', held, 'version', ARGV[2])
apply_state(KEYS[1], ARGV[3])
return 1
"""

_RELEASE_FN = _STATE_FN + """
local function release(acct, holds, id, bal, ver, state)
  local e = redis.call('HGET', holds, id)
  local exists = redis.call('EXISTS', acct) == 1
  if e then
    local amt = tonumber(string.match(e, '^(%-?%d+)'))
    redis.call('HDEL', holds, id)
    if exists and amt ~= 0 then redis.call('HINCRBY', acct, 'held', -amt) end  -- a used-up lease is 0
  end
  if bal ~= '' and exists then
    local v = tonumber(redis.call('HGET', acct, 'version') or '-1')
    if tonumber(ver) > v then
      redis.call('HSET', acct, 'balance', bal, 'version', ver)
      apply_state(acct, state)
      return 2
    end
  end
  return 1
end
"""

RELEASE = _RELEASE_FN + "return release(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"

# A writer batch in one call: delete its journal fields (KEYS[1]; ARGV[1] = how many, then the
# fields), then release each hold: KEYS[2k], KEYS[2k+1] = account and holds keys, four ARGV each
# (hold id, balance, version, state).
RELEASE_BATCH = _RELEASE_FN + """
local nf = tonumber(ARGV[1])
for i = 2, nf + 1 do redis.call('HDEL', KEYS[1], ARGV[i]) end
local k = 2
for i = nf + 2, #ARGV, 4 do
  release(KEYS[k], KEYS[k + 1], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
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
      if exists and old ~= 0 then redis.call('HINCRBY', KEYS[1], 'held', -old) end
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
        self._carve = redis.register_script(CARVE)
        self._leased = redis.register_script(LEASED)
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

    async def hold(self, account: str, hold_id: str, amount: int,
                   lease: tuple[str, str, int, int] = ("", "", 0, 0),
                   rules: list[object] | tuple[object, ...] = ()) -> tuple[int, int, int, int, int, int]:
        """-> (status, balance, held, lease granted, cap index, cap): status 1 placed (or already
        placed), 0 insufficient, 2 over a spend cap, -1 not cached. ``lease`` = (this worker's
        previous lease on the account to return first, the field of a new lease to take, its size,
        the headroom it needs): see ``lease.Leases``; the default asks for none. ``rules``: the
        allowance and caps of the caller's tier (``Allowances.hold_args``), none by default.

        Through the send-only connection when it is up: one write and one await for the answer.
        redis-py's call path awaits several times (pool, connection check, drain, answer), and at
        every await the event loop may first run other ready work; here it is the one wait that
        cannot be avoided. Redis-py (which also loads a forgotten script) otherwise.
        """
        keys = [self.acct_key(account), self.holds_key(account)]
        args = [hold_id, amount, int(time.time()), *lease, *rules]
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
        return int(res[0]), int(res[1]), int(res[2]), int(res[3]), int(res[4]), int(res[5])

    def send_carve(self, account: str, lease_field: str, hold_id: str, amount: int,
                   on_reply: Callable[[object], None]) -> bool:
        """Place a hold carved from a lease without awaiting (``CARVE``); False if the send-only
        connection is down. ``on_reply`` gets the answer, or the exception that replaced it."""
        if self.sender is None:
            return False
        return self.sender.send_script(self._carve, [self.acct_key(account), self.holds_key(account)],
                                       [lease_field, hold_id, amount, int(time.time())], on_reply=on_reply)

    def send_release(self, account: str, hold_id: str) -> bool:
        """``release`` without awaiting (a lease given back); False if the send-only connection is down."""
        if self.sender is None:
            return False

        def failed(error: Exception) -> None:
            log.warning("credits: lease release refused by Redis (%s); the reconciler will release it", error)

        return self.sender.send_script(self._release, [self.acct_key(account), self.holds_key(account)],
                                       [hold_id, "", "", ""], on_error=failed)

    async def load(self, account: str, balance: int, version: int,
                   holds: Iterable[tuple[str, int, int]], pipe: object | None = None, state: str = "") -> object:
        """Load-if-absent (``LOAD``): True if this call cached the account (with a pipeline: queued).
        ``state``: the account's ``credits_state`` (allowance, spend counters, caps)."""
        args: list[object] = [balance, version, state]
        for hold_id, amount, ts in holds:
            args += [hold_id, amount, ts]
        done = await self._load(keys=[self.acct_key(account), self.holds_key(account)], args=args, client=pipe)
        return done if pipe is not None else bool(done)

    async def load_many(self, states: Iterable[tuple[str, int, int, list[tuple[str, int, int]], str]]) -> None:
        """``load`` of many accounts in one pipelined round trip (a batch of cold accounts, ``cold.py``).

        A pipeline checks its scripts (SCRIPT EXISTS / LOAD) before it sends them; a SCRIPT FLUSH or a
        Redis restart in between answers NOSCRIPT (seen on the shared test Redis): the batch is sent once
        more, which reloads the script. Load-if-absent makes the repeat harmless for the accounts the
        first try did load.
        """
        states = list(states)
        for attempt in range(2):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for account, balance, version, holds, state in states:
                        await self.load(account, balance, version, holds, pipe=pipe, state=state)
                    await pipe.execute()
                return
            except NoScriptError:
                if attempt:
                    raise

    async def release(self, account: str, hold_id: str, balance: int | None = None,
                      version: int | None = None, pipe: object | None = None, state: str | None = None) -> object:
        """Drop a hold; and, if ``version`` is newer than Redis's, take ``balance`` and ``state``."""
        args = [hold_id, "" if balance is None else balance, "" if version is None else version, state or ""]
        return await self._release(keys=[self.acct_key(account), self.holds_key(account)], args=args,
                                   client=pipe)

    async def release_batch(self, releases: Iterable[tuple[str, str, int | None, int | None, str | None]],
                            journal_fields: list[str]) -> None:
        """After a writer batch reached Postgres: its journal entries and holds go, the new balances
        come in — one script call per batch (a pipeline of one call per hold cost a round trip more,
        for SCRIPT EXISTS, and ~30 us of client work per hold)."""
        keys: list[str] = [self.journal_key()]
        args: list[object] = [len(journal_fields), *journal_fields]
        for account, hold_id, balance, version, state in releases:
            keys += [self.acct_key(account), self.holds_key(account)]
            args += [hold_id, "" if balance is None else balance, "" if version is None else version, state or ""]
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
        connection is down, or if the command's bytes could not all be handed to the kernel (they
        wait in this process's write buffer, ``SendOnlyRedis.in_kernel``): the caller then awaits
        ``journal``, the same idempotent call, whose answer proves it is in Redis. A Redis that forgot
        the script (SCRIPT FLUSH) answers NOSCRIPT; the call is then re-sent with the script itself.
        """
        if self.sender is None:
            return False
        args: list[object] = [mode, hold_id, amount, int(time.time())]
        for field, value in entries:
            args += [field, value]

        def failed(error: Exception) -> None:
            log.warning("credits: journal write refused by Redis (%s); the record is still queued for "
                        "Postgres", error)

        return self.sender.send_script(self._journal, [self.acct_key(account), self.holds_key(account),
                                                       self.journal_key()], args, on_error=failed) \
            and self.sender.in_kernel()

    async def with_leases(self, account: str) -> tuple[int, int, int] | None:
        """(balance, held, the part of held that is leases) in one atomic read; None if not cached."""
        res = await self._leased(keys=[self.acct_key(account), self.holds_key(account)])
        return None if res is None else (int(res[0]), int(res[1]), int(res[2]))

    async def snapshot(self, account: str) -> tuple[int, int, int] | None:
        values = await self.redis.hmget(self.acct_key(account), "balance", "held", "version")
        if values[0] is None:
            return None
        return int(values[0]), int(values[1] or 0), int(values[2] or 0)
