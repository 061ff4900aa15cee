"""Cold accounts: one Postgres round trip per tick for every account missing from Redis, not per request.

A request whose account is not in Redis (its first request ever, or after a FLUSHALL, an eviction, a
switch back from the Postgres path) must read the account from Postgres -- and open it with its
starting grant if it never existed -- before its hold can be checked. Done per request, that was
about seven round trips holding one pool connection each; a crowd of new accounts then queued for
the pool behind each other (and behind the writer) and gave up after 3 s: 24 of 1192 requests
answered 503 at 60 req/s from 200 new accounts on one worker, while the same load from known
accounts was all served (issue #23).

``ColdLoader`` makes that wait independent of how many accounts are cold at once:

* **single-flight**: one load per account at a time; every request of that account awaits it;
* **batching**: accounts that turn up cold while a load is running wait for the next one, which
  takes all of them (up to ``max_batch``): ONE call of ``credits_open_accounts`` (migration
  ``20261202001000_credits_open_accounts``, ``_v2`` since allowances: open if new, read balance +
  version + pending holds + allowance / spend counters / caps) on
  ONE pooled connection, then ONE pipelined Redis round trip of load-if-absent scripts. A crowd
  costs the pool one connection per worker, whatever its size;
* **no fixed give-up while Postgres answers**: a load waits up to ``ACQUIRE_SECONDS`` for a pool
  connection (it is one of few users, so that wait is short unless Postgres is not answering);
  Postgres down fails at once with a connection error (the request then gets the 503).

Exactness is unchanged (docs/credits.md, "Cold accounts"): Postgres still opens every account and
grants it exactly once, in SQL; Redis is loaded only from what Postgres returned, plus this worker's
holds its writer has not written yet, by the same load-if-absent script as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from litellm_plugins.credits.cache import CreditCache

log = logging.getLogger("litellm_plugins.credits")

ACQUIRE_SECONDS = 10.0  # pool wait of one batch (the per-request 3 s of the past was what gave up)
QUERY_SECONDS = 10.0

State = tuple[int, int, list[tuple[str, int, int]], str]  # balance, version, pending holds (id, amount, ts), state


class ColdLoader:
    def __init__(self, pool: asyncpg.Pool, cache: CreditCache, starting_units: int,
                 unflushed_holds: Callable[[str], list[tuple[str, int, int]]],
                 switch_back: Callable[[], Awaitable[None]] | None, max_batch: int = 500) -> None:
        self.pool = pool
        self.cache = cache
        self.starting_units = starting_units
        self.unflushed_holds = unflushed_holds
        self.switch_back = switch_back  # None: no Postgres path (on_redis_error is not "postgres")
        self.max_batch = max_batch
        self._waiting: dict[str, asyncio.Future[None]] = {}  # for the next batch
        self._loading: dict[str, asyncio.Future[None]] = {}  # in the batch under way
        self._task: asyncio.Task[None] | None = None
        self.stats = {"batches": 0, "accounts": 0, "largest": 0}

    async def ensure(self, account: str) -> None:
        """Return once ``account`` is in Redis (loaded by this call, or by one already under way);
        raises what the load raised (``store.UNAVAILABLE``, Redis errors) to every request waiting on it."""
        future = self._loading.get(account) or self._waiting.get(account)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[account] = future
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._run(), name="credits-cold-loads")
        # shield: a request that goes away (client disconnect) must not cancel the others' load
        await asyncio.shield(future)

    async def _run(self) -> None:
        while self._waiting:
            accounts = list(self._waiting)[: self.max_batch]
            for account in accounts:
                self._loading[account] = self._waiting.pop(account)
            try:
                await self._load(accounts)
            except BaseException as exc:
                for account in accounts:
                    future = self._loading.pop(account)
                    if future.done():
                        continue
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                        future.exception()  # retrieved: no "never retrieved" warning when nobody waits
                    else:
                        future.cancel()
                if not isinstance(exc, Exception):
                    raise
            else:
                for account in accounts:
                    future = self._loading.pop(account)
                    if not future.done():
                        future.set_result(None)

    async def _load(self, accounts: list[str]) -> None:
        states = await self._read(accounts)
        # This worker's holds its writer has not written yet count too (read after Postgres answered,
        # so a flush in between is seen on one side or the other: Postgres rows or the queue).
        await self.cache.load_many((account, balance, version, holds + self.unflushed_holds(account), state)
                                   for account, (balance, version, holds, state) in states.items())
        self.stats["batches"] += 1
        self.stats["accounts"] += len(accounts)
        self.stats["largest"] = max(self.stats["largest"], len(accounts))

    async def _read(self, accounts: list[str]) -> dict[str, State]:
        for _ in range(2):
            async with self.pool.acquire(timeout=ACQUIRE_SECONDS) as conn:
                rows = await conn.fetch("SELECT * FROM credits_open_accounts_v2($1::text[], $2, $3)",
                                        accounts, self.starting_units, self.switch_back is not None,
                                        timeout=QUERY_SECONDS)
            if not (rows and rows[0]["out_postgres"]):
                break
            assert self.switch_back is not None
            await self.switch_back()  # Postgres still placed holds: make Redis the store again first
        else:  # switched back, and another worker switched to Postgres again meanwhile: a 503
            raise ConnectionError("credits: Postgres is placing holds, the cold account cannot be cached yet")
        states: dict[str, State] = {}
        for r in rows:
            state = states.setdefault(r["out_account"], (r["out_balance"], r["out_version"], [], r["out_state"] or ""))
            if r["out_hold"] is not None:
                state[2].append((r["out_hold"], r["out_amount"], r["out_ts"]))
        missing = set(accounts) - set(states)
        if missing:  # cannot happen (the function opens every account it is given): say so loudly
            raise RuntimeError(f"credits_open_accounts returned no row for {len(missing)} account(s)")
        return states
