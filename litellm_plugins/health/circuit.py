"""Per-deployment circuit breakers, shared in Redis so every worker and instance routes the same way.

One hash per deployment (``{prefix}health:d:{model_id}``), changed only by Lua scripts so
concurrent outcomes from many workers never lose an update:

  state      closed | open | half_open
  fails      consecutive counted *traffic* failures (reset by a traffic success)
  pfails     consecutive failed *probes* (reset by a probe success)
  opened_at  ms epoch when the circuit last opened; opened_by traffic | probe; reason
  err, lat   EWMA of the traffic error rate (0..1) and success latency (ms)
  forced     down | up | ""  (operator override), forced_reason, forced_by, forced_at
  probe_at, probe_ok, probe_ms, probe_err   last probe result

Transitions: closed -> open after ``failure_threshold`` traffic failures (or
``probe_failure_threshold`` probe failures); open -> half_open once ``cooldown`` has passed (lazily,
at the next outcome or prober tick); half_open -> closed on a success, -> open on any failure.
A probe success does not close a circuit that real traffic opened: ``GET /models`` answering says
nothing about a model that keeps returning 500.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

DOWN_STATES = frozenset({"open", "half_open", "forced_down"})

_RECORD = """
local k = KEYS[1]
local ok = ARGV[1] == '1'
local lat = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local alpha = tonumber(ARGV[5])
local source = ARGV[6]
local threshold = tonumber(ARGV[7])
local reason = ARGV[8]
local h = redis.call('HMGET', k, 'state', 'fails', 'pfails', 'opened_at', 'opened_by', 'err', 'lat', 'forced')
local stored = h[1] or 'closed'
local state = stored
local fails = tonumber(h[2]) or 0
local pfails = tonumber(h[3]) or 0
local opened_at = tonumber(h[4]) or 0
local opened_by = h[5] or ''
if state == 'open' and now >= opened_at + cooldown then state = 'half_open' end
local n = tonumber(ARGV[9])
if source == 'traffic' then
  -- n outcomes at once (successes are batched per worker): weight of the batch = 1 - (1-alpha)^n
  local w = 1 - (1 - alpha) ^ n
  local v = 1
  if ok then v = 0 end
  local err = v
  if h[6] then err = w * v + (1 - w) * tonumber(h[6]) end
  redis.call('HSET', k, 'err', tostring(err))
  if ok and lat >= 0 then
    local l = lat
    if h[7] then l = w * lat + (1 - w) * tonumber(h[7]) end
    redis.call('HSET', k, 'lat', tostring(l))
  end
end
if ok then
  if source == 'traffic' then fails = 0 else pfails = 0 end
  if state ~= 'closed' and (source == 'traffic' or opened_by == 'probe') then
    state = 'closed'; fails = 0; pfails = 0
  end
else
  local n
  if source == 'traffic' then fails = fails + 1; n = fails else pfails = pfails + 1; n = pfails end
  if state == 'half_open' or (state == 'closed' and n >= threshold) then
    state = 'open'; opened_at = now; opened_by = source
    redis.call('HSET', k, 'reason', reason)
  end
end
redis.call('HSET', k, 'state', state, 'fails', fails, 'pfails', pfails, 'opened_at', opened_at,
           'opened_by', opened_by)
if state == 'closed' and stored ~= 'closed' then redis.call('HSET', k, 'reason', '') end
return {stored, state, h[8] or ''}
"""

# KEYS = deployment hashes; moves every open circuit whose cool-down has passed to half_open and
# returns the indexes (1-based) of those that moved, so the prober can record and trial them.
_TICK = """
local now = tonumber(ARGV[1])
local cooldown = tonumber(ARGV[2])
local moved = {}
for i, k in ipairs(KEYS) do
  local h = redis.call('HMGET', k, 'state', 'opened_at')
  if h[1] == 'open' and now >= (tonumber(h[2]) or 0) + cooldown then
    redis.call('HSET', k, 'state', 'half_open')
    table.insert(moved, i)
  end
end
return moved
"""


@dataclass(frozen=True)
class Transition:
    model_id: str
    old: str
    new: str
    forced: str

    @property
    def changed(self) -> bool:
        return self.old != self.new


def effective_state(circuit: str, forced: str) -> str:
    """What routing honours: an operator override wins over the circuit."""
    if forced == "down":
        return "forced_down"
    if forced == "up":
        return "forced_up"
    return circuit


def is_up(state: str) -> bool:
    return state not in DOWN_STATES


def now_ms() -> int:
    return int(time.time() * 1000)


class Circuits:
    """The Redis side of the breakers; one instance per worker (scripts registered once)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._record = redis.register_script(_RECORD)
        self._tick = redis.register_script(_TICK)

    def key(self, model_id: str) -> str:
        return f"{self.prefix}health:d:{model_id}"

    async def record(self, model_id: str, ok: bool, *, source: str, threshold: int, cooldown_s: float,
                     alpha: float, latency_ms: float | None = None, reason: str = "",
                     now: int | None = None, count: int = 1) -> Transition:
        """``count`` > 1: that many outcomes alike at once (``latency_ms`` is then their mean)."""
        old, new, forced = await self._record(
            keys=[self.key(model_id)],
            args=["1" if ok else "0", -1 if latency_ms is None else float(latency_ms),
                  now_ms() if now is None else now, int(cooldown_s * 1000), alpha, source, threshold,
                  reason[:200], max(1, count)])
        return Transition(model_id, old.decode(), new.decode(), forced.decode())

    async def tick(self, model_ids: list[str], cooldown_s: float, now: int | None = None) -> list[str]:
        if not model_ids:
            return []
        moved = await self._tick(keys=[self.key(m) for m in model_ids],
                                 args=[now_ms() if now is None else now, int(cooldown_s * 1000)])
        return [model_ids[int(i) - 1] for i in moved]

    async def read(self, model_ids: list[str]) -> dict[str, dict[str, str]]:
        """Every field of every deployment's hash, one round trip."""
        if not model_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for model_id in model_ids:
                pipe.hgetall(self.key(model_id))
            rows = await pipe.execute()
        return {m: {k.decode(): v.decode() for k, v in row.items()} for m, row in zip(model_ids, rows)}

    async def read_routing(self, model_ids: list[str]) -> list[Any]:
        """Just what the refresher needs (state, opened_at, forced), one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for model_id in model_ids:
                pipe.hmget(self.key(model_id), "state", "opened_at", "forced")
            return await pipe.execute()

    async def force(self, model_id: str, forced: str, reason: str, actor: str) -> tuple[str, str]:
        """Set (``down``/``up``) or clear (``""``) an override; returns (old, new) effective states."""
        key = self.key(model_id)
        state, old_forced = await self.redis.hmget(key, "state", "forced")
        circuit = (state or b"closed").decode()
        old = effective_state(circuit, (old_forced or b"").decode())
        await self.redis.hset(key, mapping={"forced": forced, "forced_reason": reason if forced else "",
                                            "forced_by": actor if forced else "",
                                            "forced_at": str(now_ms()) if forced else ""})
        return old, effective_state(circuit, forced)

    async def record_probe(self, model_id: str, ok: bool, latency_ms: float | None, error: str,
                           at: int) -> None:
        await self.redis.hset(self.key(model_id), mapping={
            "probe_at": str(at), "probe_ok": "1" if ok else "0",
            "probe_ms": "" if latency_ms is None else f"{latency_ms:.1f}", "probe_err": error})


def blocked_sets(model_ids: list[str], rows: list[Any], cooldown_ms: int,
                 now: int) -> tuple[frozenset[str], frozenset[str]]:
    """(circuit open and cooling down, forced down) from ``read_routing`` rows; half-open is allowed
    through: that is the trial. A forced-up deployment is never blocked."""
    open_ids: list[str] = []
    forced_down: list[str] = []
    for model_id, (state, opened_at, forced) in zip(model_ids, rows):
        if forced == b"down":
            forced_down.append(model_id)
        elif forced != b"up" and state == b"open" and now < int(opened_at or 0) + cooldown_ms:
            open_ids.append(model_id)
    return frozenset(open_ids), frozenset(forced_down)
