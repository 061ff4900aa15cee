"""The Postgres path: credit holds placed in the book of record while Redis is unreachable.

A hold is one call of ``credits_hold_pg_v2`` (migrations ``20261202000000_credits_postgres_path`` and
``20261202010000_credits_allowances``: the allowance of now is applied first, caps checked): the
account row is locked (``SELECT … FOR UPDATE``), ``balance − pending holds − this worker's holds not
written yet`` must cover the amount, and the hold row is inserted in the same transaction -- exact
across workers and instances, and never below zero (a settle can still exceed its hold, as with Redis).

Switching, in the shared one-row table ``credit_ledger_mode``:

* **to Postgres** (``enter``): a worker whose Redis call failed sets ``mode = 'postgres'``, ``since = now()``.
  Holds Redis granted just before the outage are in the workers' writer queues (every hold is queued
  for Postgres as it is placed, leased or exact), not yet in ``credit_holds``; a Postgres hold that
  did not count them could overspend. So Postgres holds start only ``grace`` seconds after ``since``
  (one writer interval + 2.5 s: a flush, plus a Redis call timing out inside it); requests wait
  meanwhile (latency, not refusals), and are served by Redis if it answers before then.
  A lease (Redis only, ``lease:<worker>:<n>``) is a reservation, not a spend: the holds carved from it
  are ordinary queued holds, so Postgres counts them like the others; the worker forgets its leases on
  the switch and cannot carve again before a reconnect (a lease is bound to the connection it was
  granted on), after which Redis has been rebuilt.
* **back to Redis** (``switch_back``): the first worker that reaches Redis again locks the mode row
  (``FOR UPDATE``: it waits for every Postgres hold in flight, and none can start until it commits),
  deletes every cached account hash in Redis when a Postgres hold was placed (``used``), and sets
  ``mode = 'redis'``. The next request of each account rebuilds it from Postgres by the existing
  load-if-absent path (balance + version + pending holds, which now include the Postgres holds, + the
  worker's unflushed holds; the holds hashes are kept, so holds placed meanwhile through Redis count
  too). A worker still on the Postgres path gets ``-2`` from its next hold and goes back to Redis; a
  cold-account load checks the mode too, so a worker that never saw the outage cannot rebuild an
  account from Postgres while Postgres holds are still being placed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from litellm_plugins.credits.cache import CreditCache

log = logging.getLogger("litellm_plugins.credits")

PROBE_SECONDS = 0.25  # how often a worker on the Postgres path asks Redis whether it is back
EXTRA_GRACE_SECONDS = 2.5  # on top of one writer interval (see the module docstring)

PLACED, INSUFFICIENT, NOT_POSTGRES, TOO_EARLY = 1, 0, -2, -3


class PostgresHolds:
    def __init__(self, pool: asyncpg.Pool, cache: CreditCache, starting_units: int, writer_interval: float) -> None:
        self.pool = pool
        self.cache = cache
        self.starting_units = starting_units
        self.grace = writer_interval + EXTRA_GRACE_SECONDS
        self.active = False  # this worker places holds in Postgres
        self.ready_at = 0.0  # time.monotonic() when the switch grace is over (no Postgres call before)
        self._last_probe = 0.0
        self._switch_lock = asyncio.Lock()
        self.stats = {"holds": 0, "entered": 0, "switched_back": 0, "rebuilt_accounts": 0}

    async def enter(self) -> None:
        """Redis failed here: Postgres places holds from now on (raises store.UNAVAILABLE if it is down too)."""
        async with self.pool.acquire(timeout=3.0) as conn:
            await conn.execute("UPDATE credit_ledger_mode SET mode = 'postgres', since = now(), used = false "
                               "WHERE id = 1 AND mode <> 'postgres'")
            left = await conn.fetchval(
                "SELECT GREATEST(0, extract(epoch FROM since + make_interval(secs => $1) - clock_timestamp()))"
                "::float8 FROM credit_ledger_mode WHERE id = 1", self.grace)
        # Requests wait out the grace here rather than asking Postgres (a crowd polling it would
        # empty the pool); the first hold after it still checks the grace in Postgres.
        self.ready_at = time.monotonic() + float(left or 0.0)
        if not self.active:
            log.warning("credits: Redis unreachable; holds go to Postgres")
            self.stats["entered"] += 1
        self.active = True
        self._last_probe = time.monotonic()

    async def hold(self, hold_id: str, call_id: str, account: str, amount: int, ts: float,
                   unflushed: int, tier: str | None = None,
                   allowance: tuple[str | None, int, float] | None = None,
                   rules: list[object] | None = None) -> tuple[int, int, int, int, int, int]:
        """-> (status, balance, held, wait ms, cap index, cap): see ``credits_hold_pg_v2``.
        ``allowance``: ``Allowances.ensure_args`` of the tier; ``rules``: ``Allowances.hold_args``
        (its spend keys and caps)."""
        period, alw, expires = allowance or (None, 0, 0.0)
        _, _, day, week, month, cap_d, cap_w, cap_m = rules or ["", 0, "", "", "", "", "", ""]
        caps = [None if c == "" else int(c) for c in (cap_d, cap_w, cap_m)]  # type: ignore[call-overload]
        async with self.pool.acquire(timeout=3.0) as conn:
            row = await conn.fetchrow(
                "SELECT * FROM credits_hold_pg_v2($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
                "$16, $17, $18)", hold_id, call_id, account, amount, ts, unflushed, self.starting_units,
                self.grace, tier, period, alw, expires, day or None, week or None, month or None, *caps)
        if row["out_status"] == PLACED:
            self.stats["holds"] += 1
        return (row["out_status"], row["out_balance"], row["out_held"], row["out_wait_ms"], row["out_cap"],
                row["out_cap_units"])

    def probe_due(self) -> bool:
        return time.monotonic() - self._last_probe >= PROBE_SECONDS

    async def redis_answers(self) -> bool:
        self._last_probe = time.monotonic()
        try:
            async with asyncio.timeout(1.0):
                await self.cache.redis.ping()
            return True
        except Exception:  # noqa: BLE001 - any failure means: still down
            return False

    async def switch_back(self) -> None:
        """Redis answers: make it the hold store again, rebuilt from Postgres (one worker does the work)."""
        async with self._switch_lock:
            async with self.pool.acquire(timeout=5.0) as conn, conn.transaction():
                row = await conn.fetchrow("SELECT mode, used FROM credit_ledger_mode WHERE id = 1 FOR UPDATE")
                if row["mode"] == "postgres":
                    if row["used"]:
                        self.stats["rebuilt_accounts"] += await self._drop_accounts()
                    await conn.execute("UPDATE credit_ledger_mode SET mode = 'redis', since = now() WHERE id = 1")
                    log.warning("credits: Redis is back; holds go to Redis again (rebuilt from Postgres)")
            if self.active:
                self.stats["switched_back"] += 1
            self.active = False

    async def _drop_accounts(self) -> int:
        """Delete every cached account hash (not the holds hashes, nor the journal): each is rebuilt from
        Postgres by its next request, exactly as after a FLUSHALL."""
        redis = self.cache.redis
        batch: list[bytes] = []
        dropped = 0
        async for key in redis.scan_iter(match=self.cache.acct_key("*"), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                dropped += await redis.delete(*batch)
                batch = []
        if batch:
            dropped += await redis.delete(*batch)
        return dropped
