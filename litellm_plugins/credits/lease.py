"""Per-worker leases: holds placed without waiting for Redis while an account has plenty left.

Why: the hold's Redis round trip before the provider call was the largest part of what credits
add to a request (BENCHMARKS.md, session 5: -0.84 ms p50 with the hold removed). With a lease, a
worker that has just served an account sets aside ``lease_requests`` times the request's worst
case inside the same atomic script as an exact hold -- only when the account keeps at least
``lease_headroom`` times that much free afterwards. Later requests of the account on this worker
take their hold out of the lease (``take``): the ``CARVE`` script is handed to the kernel without
an await and the request goes on; Redis moves the amount from the lease entry to the hold's own
entry, so every hold is still an individual entry there (settle, void, reconciler and rebuild are
unchanged) and Postgres still gets one hold row per request from the writer.

What keeps it exact:
* A lease is an entry in the account's holds hash (``lease:<worker>:<n>``), so it counts in
  ``held`` for every other worker and instance: they can never hold what it set aside.
* This worker only carves while ``remaining`` covers the request (checked and decremented with no
  await in between), while the connection it was granted on is the one in use, and before its
  deadline (``lease_seconds`` after the grant was sent, measured on this worker's monotonic clock).
* A lease gone from Redis (FLUSHALL, restart) is noticed by the next carve's answer; that carve is
  placed unchecked, because its request has already gone to the provider. The window is the
  carves in flight at the moment of the flush (microseconds to a few ms), inside the documented
  FLUSHALL window of unflushed holds (docs/credits.md).

What keeps it from refusing requests it should serve (a 402 while another worker's lease sits
unused): a lease is given back when it goes a whole maintenance tick unused, when it expires, when a
carve's answer shows the account's free balance below the lease's size, and by the next exact
hold of the same worker on the account. A worker killed with a lease leaves it to the reconciler,
which releases lease entries older than ``lease_seconds + 30`` s (the 30 s absorb clock skew
between instances); the holds carved from it are ordinary holds and follow the hold TTL.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from litellm_plugins.credits.cache import CreditCache
from litellm_plugins.metrics import record as metrics

log = logging.getLogger("litellm_plugins.credits")

STALE_AFTER_EXPIRY_SECONDS = 30  # the reconciler releases a lease this long after it expired
TICKS_PER_LEASE = 5  # maintenance ticks in a lease's life: one unused tick gives it back


@dataclass
class Lease:
    field: str
    size: int
    remaining: int
    deadline: float  # time.monotonic() after which this worker stops carving
    generation: int  # the send-only connection it was granted on
    balance: int  # the account's balance as Redis last reported it (response header)
    used: bool = True  # carved (or granted) since the last maintenance tick


class Leases:
    def __init__(self, cache: CreditCache, requests: int, seconds: float, headroom: int) -> None:
        self.cache = cache
        self.requests = requests
        self.seconds = seconds
        self.headroom = headroom
        self.by_account: dict[str, Lease] = {}
        self.recent: dict[str, float] = {}  # account -> monotonic time of its last exact hold here
        self._asking: set[str] = set()  # accounts with an exact hold asking for a lease right now
        self._unsent: list[tuple[str, str]] = []  # (account, lease field) to give back through redis-py
        self._worker = uuid.uuid4().hex[:12]
        self._counter = 0
        self.stats = {"carved": 0, "granted": 0, "returned": 0, "lost": 0}

    @property
    def tick_seconds(self) -> float:
        """How often ``maintain`` runs: a fifth of a lease's life (1 s by default), so an idle lease
        ties up money for about a second, and a lease granted just before a tick still gets a whole
        tick to be used (it starts as ``used``)."""
        return self.seconds / TICKS_PER_LEASE

    @property
    def enabled(self) -> bool:
        return self.requests > 0 and self.cache.sender is not None

    # ---- request path (no awaits) ---------------------------------------------------------------
    def take(self, account: str, hold_id: str, amount: int) -> int | None:
        """Carve ``amount`` from this worker's lease on ``account``; the balance last reported, or
        None when there is no usable lease (the caller then places an exact hold)."""
        lease = self.by_account.get(account)
        if lease is None or amount <= 0 or lease.remaining < amount:
            return None
        sender = self.cache.sender
        if sender is None or not sender.connected or sender.generation != lease.generation \
                or time.monotonic() >= lease.deadline:
            return None
        if not self.cache.send_carve(account, lease.field, hold_id, amount,
                                     lambda reply: self._carved(account, lease, reply)):
            return None
        lease.remaining -= amount
        lease.used = True
        self.stats["carved"] += 1
        return lease.balance

    def exact_args(self, account: str, amount: int) -> tuple[tuple[str, str, int, int], int]:
        """What the exact hold should do with leases: (previous lease to return, new lease field,
        size, headroom) and the connection generation; a new lease is asked for only for an account
        this worker served within ``lease_seconds`` (one-off callers never tie up a lease)."""
        sender = self.cache.sender
        if not self.enabled or sender is None or not sender.connected:
            return ("", "", 0, 0), -1
        now = time.monotonic()
        old = self.by_account.pop(account, None)  # given back by the same script; carves sent before it arrive first
        old_field = old.field if old is not None else ""
        seen = self.recent.get(account)
        self.recent[account] = now
        wanted = old is not None or (seen is not None and now - seen <= self.seconds)
        if amount <= 0 or account in self._asking or not wanted:
            return (old_field, "", 0, 0), sender.generation
        self._counter += 1
        self._asking.add(account)
        return (old_field, f"lease:{self._worker}:{self._counter}", self.requests * amount,
                self.headroom), sender.generation

    def answered(self, account: str, args: tuple[str, str, int, int]) -> None:
        """The exact hold is over, whatever its outcome (one that raised may have granted a lease
        nobody records: the reconciler releases it)."""
        if args[1]:
            self._asking.discard(account)

    def after_exact(self, account: str, args: tuple[str, str, int, int], generation: int, granted: int,
                    balance: int, sent_at: float) -> None:
        """Record the lease the exact hold granted, if any."""
        if granted > 0 and args[1]:
            self.by_account[account] = Lease(args[1], granted, granted, sent_at + self.seconds, generation,
                                             balance)
            self.stats["granted"] += 1
            metrics.lease("granted")

    def _carved(self, account: str, lease: Lease, reply: object) -> None:
        if isinstance(reply, list) and len(reply) == 3:
            status, balance, held = (int(x) for x in reply)
            if status == 0:  # the lease was gone: stop using it
                self.stats["lost"] += 1
                metrics.lease("lost")
                self._give_back(account, lease)
                return
            if balance or held:
                lease.balance = balance
                if balance - held < lease.size:  # others are short of money this lease sets aside
                    self._give_back(account, lease)
            return
        log.warning("credits: lease carve failed (%s); the lease is given back", reply)
        self._give_back(account, lease)

    def _give_back(self, account: str, lease: Lease) -> None:
        if self.by_account.get(account) is lease:
            del self.by_account[account]
        lease.remaining = 0
        if self.cache.send_release(account, lease.field):
            self.stats["returned"] += 1
            metrics.lease("returned")
        else:  # the send-only connection is down: the next tick gives it back through redis-py
            self._unsent.append((account, lease.field))

    # ---- background ---------------------------------------------------------------------------
    def maintain(self) -> None:
        """Every tick: give back leases unused since the last tick or expired; forget old accounts."""
        now = time.monotonic()
        for account, lease in list(self.by_account.items()):
            if not lease.used or now >= lease.deadline:
                self._give_back(account, lease)
            else:
                lease.used = False
        for account, seen in list(self.recent.items()):
            if now - seen > self.seconds:
                del self.recent[account]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            self.maintain()
            await self._release_unsent()

    async def _release_unsent(self) -> None:
        while self._unsent:
            account, field = self._unsent[0]
            try:
                await self.cache.release(account, field)
            except Exception:  # noqa: BLE001 - Redis down: next tick (or the reconciler) releases it
                log.warning("credits: lease of %s not given back yet (Redis unavailable)", account)
                return
            self._unsent.pop(0)
            self.stats["returned"] += 1
            metrics.lease("returned")

    def drop_all(self) -> None:
        """Redis unreachable (the Postgres path takes over): carve from no lease of this worker again;
        each is given back when Redis answers (next tick), or released by the reconciler."""
        leases, self.by_account = self.by_account, {}
        for account, lease in leases.items():
            lease.remaining = 0
            self._unsent.append((account, lease.field))

    async def close(self) -> None:
        """Shutdown: give every lease back (awaited, so it is done before the worker exits)."""
        leases, self.by_account = self.by_account, {}
        self._unsent += [(account, lease.field) for account, lease in leases.items()]
        await self._release_unsent()  # what Redis does not take now, the reconciler releases later
