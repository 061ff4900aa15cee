"""The export job: one supervised task per exporter in every worker; only the lease holder sends.

A round: read the next batch after the exporter's cursor (replays of dead letters first), send it,
then move the cursor in Postgres. A crash between the send and the cursor move re-sends that batch
(at least once); receivers dedupe on the event id, so each event counts once. Events older than the
receiver accepts, or refused by it as invalid, go to the dead-letter list and the cursor moves on.
While a receiver, Postgres or Redis is down the job retries with exponential backoff and jitter
(``retry_initial_seconds`` doubling up to ``retry_max_seconds``); a full batch is followed by the next
one at once, so a backlog drains as fast as the receiver answers (docs/billing.md, "Delivery").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timedelta, timezone

import asyncpg
import httpx
from redis.exceptions import RedisError

from litellm_plugins.billing import store
from litellm_plugins.billing.exporters import DeliveryError, Exporter
from litellm_plugins.billing.settings import BillingSettings
from litellm_plugins.core.lease import RedisLease
from litellm_plugins.core.runtime import Runtime
from litellm_plugins.credits.store import UNAVAILABLE

log = logging.getLogger("litellm_plugins.billing")

TRANSIENT = (*UNAVAILABLE, asyncpg.PostgresError, RedisError, DeliveryError)


def backoff(failures: int, initial: float, cap: float) -> float:
    """Exponential backoff with jitter: a random point in the upper half of ``initial * 2^(n-1)``,
    capped, so exporters of several proxies do not retry in lockstep after an outage."""
    delay = min(cap, initial * 2 ** max(0, failures - 1))
    return delay * random.uniform(0.5, 1.0)


class ExportWorker:
    def __init__(self, rt: Runtime, settings: BillingSettings, exporter: Exporter) -> None:
        self.rt = rt
        self.settings = settings
        self.exporter = exporter
        self.lease = RedisLease(rt.redis, f"{rt.settings.redis_key_prefix}billing:exporter:{exporter.name}",
                                settings.lease_ttl_seconds)
        self.failures = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._renewed = 0.0  # monotonic time of the last lease renewal
        self._replays_checked = 0.0  # ... and of the last look for dead letters to replay
        self._pruned = time.monotonic()  # ... and of the last pruning (the first one an interval after start)

    @property
    def name(self) -> str:
        return self.exporter.name

    def describe(self) -> dict[str, object]:
        return {"sender": self.lease.holding, "consecutive_failures": self.failures,
                "last_error": self.last_error, "last_success": self.last_success}

    async def run_forever(self) -> None:
        timeout = httpx.Timeout(self.settings.request_timeout_seconds)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            try:
                while True:
                    await asyncio.sleep(await self.step(client))
            finally:
                await asyncio.shield(self._release())

    async def _release(self) -> None:
        try:
            await self.lease.release()
        except (RedisError, OSError):
            pass

    async def step(self, client: httpx.AsyncClient) -> float:
        """One round; returns how long to sleep before the next."""
        idle = self.settings.poll_interval_seconds
        try:
            if not await self._hold_lease():
                return min(idle * 5, self.settings.lease_ttl_seconds / 3)
            sent, full = await self.export_once(client)
        except TRANSIENT as exc:
            self.failures += 1
            self.last_error = str(exc) if isinstance(exc, DeliveryError) else type(exc).__name__
            delay = backoff(self.failures, self.settings.retry_initial_seconds, self.settings.retry_max_seconds)
            log.warning("billing exporter %s: %s; retrying in %.1fs", self.name, self.last_error, delay)
            return delay
        if sent:
            self.failures, self.last_error, self.last_success = 0, None, time.time()
        if not full and time.monotonic() - self._pruned >= self.settings.prune_interval_seconds:
            try:
                await self.prune()
            except TRANSIENT as exc:
                log.warning("billing exporter %s: pruning the outbox failed (%s)", self.name, type(exc).__name__)
        return 0.0 if full else idle

    async def prune(self, batch: int = 10_000, max_batches: int = 100) -> int:
        """Delete outbox rows every enabled exporter has acknowledged, past ``outbox_retention_days``
        (any exporter's sender may do it: the delete is idempotent). Runs when the outbox is drained."""
        self._pruned = time.monotonic()
        names = [e.name for e in self.settings.exporters if e.enabled]
        total = 0
        for _ in range(max_batches):
            async with self.rt.pool.acquire(timeout=5.0) as conn:
                deleted = await store.prune(conn, names, self.settings.outbox_retention_days, batch)
            total += deleted
            if deleted < batch:
                break
        return total

    async def _hold_lease(self) -> bool:
        """Take the lease, or renew it once a third of its TTL has passed (not every round: a backlog
        drains in rounds of milliseconds)."""
        now = time.monotonic()
        if self.lease.holding and now - self._renewed < self.settings.lease_ttl_seconds / 3:
            return True
        held = await self.lease.acquire()
        if held:
            self._renewed = now
        return held

    async def export_once(self, client: httpx.AsyncClient) -> tuple[int, bool]:
        """Send one batch; -> (events handled, whether the batch was full). Replays an operator asked
        for are looked for once per ``poll_interval_seconds``, and go before new events."""
        limit = self.exporter.settings.batch
        look_for_replays = time.monotonic() - self._replays_checked >= self.settings.poll_interval_seconds
        async with self.rt.pool.acquire(timeout=5.0) as conn:
            replays = await store.replay_batch(conn, self.name, limit) if look_for_replays else []
            if look_for_replays and not replays:
                self._replays_checked = time.monotonic()
            events = [] if replays else await store.next_batch(
                conn, await store.cursor(conn, self.name), limit, self.settings.usage_wait_seconds)
        if replays:  # an operator asked for these: sent whatever their age; refused again -> dead again
            refused: str | None = None
            try:
                await self.exporter.send(client, replays)
            except DeliveryError as exc:
                if exc.retryable:
                    raise
                refused = str(exc)
            async with self.rt.pool.acquire(timeout=5.0) as conn:
                if refused:
                    await store.dead_letter(conn, self.name, replays, refused)
                else:
                    await store.mark_replayed(conn, self.name, [e.seq for e in replays])
            return len(replays), len(replays) == limit
        if not events:
            return 0, False
        dead: list[tuple[list[store.Event], str]] = []
        fresh = [e for e in events if self.exporter.code(e)]  # e.g. grants without grant_code: skipped
        max_age = self.exporter.settings.max_age_days
        if max_age is not None:
            oldest = datetime.now(timezone.utc) - timedelta(days=max_age)
            stale = [e for e in fresh if e.created_at < oldest]
            fresh = [e for e in fresh if e.created_at >= oldest]
            if stale:
                dead.append((stale, f"older than {max_age:g} days ({self.exporter.settings.type} refuses it)"))
        try:
            await self.exporter.send(client, fresh)
        except DeliveryError as exc:
            if exc.retryable:
                raise
            dead.append((fresh, str(exc)))
        last = events[-1]
        async with self.rt.pool.acquire(timeout=5.0) as conn:
            if dead:
                async with conn.transaction():
                    for batch, reason in dead:
                        await store.dead_letter(conn, self.name, batch, reason)
                    await store.advance(conn, self.name, (last.txid, last.seq), len(events))
            else:
                await store.advance(conn, self.name, (last.txid, last.seq), len(events))
        return len(events), len(events) == limit
