"""Open-loop bursts against a real proxy: request *i* leaves at ``start + i / rate`` whatever the
answers before it, as a crowd of independent clients would send them (a closed loop would slow
down with the proxy and hide exactly the queueing a crowd causes).

Used by tests/test_credits_crowd.py (a modest burst) and benchmarks/crowd_credits.py (the full
size, and the search for the highest rate the proxy serves). Bounded: ``len(keys)`` requests, each
with a client timeout; everything is awaited before ``burst`` returns.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp


@dataclass(frozen=True)
class Shot:
    key: str
    status: int            # 0 = connection error / client timeout
    latency: float         # seconds, from the request's planned start to its full answer
    late: float            # seconds the client sent it after its planned start (client overload)
    error: str = ""


@dataclass
class Burst:
    shots: list[Shot] = field(default_factory=list)
    seconds: float = 0.0

    def statuses(self) -> Counter[int]:
        return Counter(s.status for s in self.shots)

    def latency_ms(self, q: float, status: int = 200) -> float:
        values = sorted(s.latency for s in self.shots if s.status == status)
        return values[min(len(values) - 1, int(len(values) * q))] * 1000 if values else float("nan")

    def rate(self) -> float:
        return len(self.shots) / self.seconds if self.seconds else 0.0

    def max_late_ms(self) -> float:
        return max((s.late for s in self.shots), default=0.0) * 1000


def body(model: str, max_tokens: int = 6) -> dict:
    return {"model": model, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"crowd {uuid.uuid4().hex}"}]}


async def burst(url: str, keys: list[str], rate: float, model: str = "gpt-4o-mini",
                timeout: float = 60.0) -> Burst:
    """One POST /v1/chat/completions per key (in order) at ``rate`` requests/s, open loop."""
    out = Burst()
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(base_url=url, connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        start = time.monotonic() + 0.05

        async def one(i: int, key: str) -> Shot:
            planned = start + i / rate
            await asyncio.sleep(max(0.0, planned - time.monotonic()))
            late = time.monotonic() - planned
            try:
                async with session.post("/v1/chat/completions", json=body(model),
                                        headers={"Authorization": f"Bearer {key}"}) as r:
                    text = await r.text()
                    status = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return Shot(key, 0, time.monotonic() - planned, late, type(exc).__name__)
            return Shot(key, status, time.monotonic() - planned, late, "" if status == 200 else text[:200])

        out.shots = list(await asyncio.gather(*(one(i, k) for i, k in enumerate(keys))))
        out.seconds = time.monotonic() - start
    return out


async def crowd_audit(dsn: str, accounts: list[str], requests: int, starting_units: int,
                      timeout: float = 60.0) -> dict[str, int]:
    """Wait until the writer has settled ``requests`` requests of ``accounts``, then count what an exact
    opening of a crowd must show: every account once, each with exactly one starting grant of
    ``starting_units``. Returns the counts (the caller asserts)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, server_settings={"search_path": "litellm_plugins"}, timeout=10)
    try:
        deadline = time.monotonic() + timeout
        while True:
            settled = await conn.fetchval("SELECT count(*) FROM credit_ledger WHERE kind = 'settle' "
                                          "AND account = ANY($1::text[])", accounts)
            if settled >= requests or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM credit_accounts WHERE account = ANY($1::text[])) AS opened, "
            "(SELECT count(*) FROM credit_ledger WHERE kind = 'grant' AND account = ANY($1::text[])) AS grants, "
            "(SELECT count(*) FROM (SELECT account FROM credit_ledger WHERE kind = 'grant' "
            " AND account = ANY($1::text[]) GROUP BY account HAVING count(*) <> 1 OR min(delta) <> $2 "
            " OR max(delta) <> $2) odd) AS odd_grants", accounts, starting_units)
        return {"settled": settled, **dict(row)}
    finally:
        await conn.close()
