"""How fast a billing exporter drains a backlog: ``--events`` ledger charges waiting in the outbox.

    python benchmarks/drain_billing.py --events 1000000 [--type lago] [--batch 100]

Fills a throwaway database (migrated by our own migrator) with ``--events`` settle rows in
``credit_ledger`` — the outbox trigger runs for each, as in production — and their usage rows (the
usage rollup triggers are switched off for the fill only: they are not what is measured), over
1,000 accounts. Then one exporter (the code the proxy runs: ``billing.worker.ExportWorker`` with its
Redis lease, cursor and batch reads) sends everything to the fake billing receiver
(``tests/support/fake_billing.py``, its own process, counting only) on loopback, and the script
reports events/s, requests, and this process's CPU per 1,000 events. The receiver answers at once:
the figure is our side's rate; a real receiver's latency divides it (one request in flight per
exporter). Postgres and Redis are the dev servers; nothing else is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402

from litellm_plugins.billing.exporters import build  # noqa: E402
from litellm_plugins.billing.worker import ExportWorker  # noqa: E402
from litellm_plugins.core.db import create_pool  # noqa: E402
from litellm_plugins.core.migrator import migrate  # noqa: E402
from litellm_plugins.core.redis import create_client  # noqa: E402
from litellm_plugins.core.runtime import Runtime  # noqa: E402
from litellm_plugins.core.settings import parse_settings  # noqa: E402
from tests.support.fake_provider import free_port  # noqa: E402
from tests.support.services import REDIS_URL, redis_prefix, throwaway_database  # noqa: E402

FILL_LEDGER = """
INSERT INTO credit_ledger (account, kind, delta, amount, hold_id, call_id, balance_after)
SELECT 'user:u' || (i % 1000), 'settle', -(1000 + i % 5000), 1000 + i % 5000, 'h' || i, 'call-' || i, 0
FROM generate_series($1::bigint, $2::bigint) AS i
"""
FILL_USAGE = """
INSERT INTO usage_log (id, call_id, account, model_group, power_level, byok, prompt_tokens, completion_tokens,
                       cost_usd, credits_charged, status)
SELECT 'h' || i, 'call-' || i, 'user:u' || (i % 1000), 'gpt-4o-mini', 'eco', false, 100 + i % 900, 10 + i % 300,
       (1000 + i % 5000) * 0.0000001, 1000 + i % 5000, 'success'
FROM generate_series($1::bigint, $2::bigint) AS i
"""


async def fill(dsn: str, events: int, chunk: int = 100_000) -> float:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "litellm_plugins"})
    try:
        await migrate(conn)
        await conn.execute("ALTER TABLE usage_log DISABLE TRIGGER USER")
        started = time.perf_counter()
        for first in range(1, events + 1, chunk):
            last = min(events, first + chunk - 1)
            await conn.execute(FILL_LEDGER, first, last)
            await conn.execute(FILL_USAGE, first, last)
        elapsed = time.perf_counter() - started
        await conn.execute("ALTER TABLE usage_log ENABLE TRIGGER USER")
        await conn.execute("ANALYZE")
        return elapsed
    finally:
        await conn.close()


async def accepted(client: httpx.AsyncClient, url: str) -> int:
    return (await client.get(url + "/_fake/accepted")).json()["accepted"]


async def drain(dsn: str, prefix: str, events: int, type_: str, batch: int | None, url: str) -> dict[str, float]:
    exporter = {"name": "bench", "type": type_, "url": url, "api_key": "bench-key-0000"}
    if batch:
        exporter["batch_size"] = batch
    settings = parse_settings({"database_url": dsn, "redis_url": REDIS_URL, "redis_key_prefix": prefix,
                               "credits": {"enabled": True},
                               "billing": {"enabled": True, "exporters": [exporter], "usage_wait_seconds": 0}})
    pool = await create_pool(dsn, 1, 4)
    redis = create_client(REDIS_URL)
    rt = Runtime(settings=settings, config={}, pool=pool, redis=redis)
    worker = ExportWorker(rt, settings.billing, build(settings.billing.exporters[0]))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            cpu, started, rounds = time.process_time(), time.perf_counter(), 0
            while True:
                delay = await worker.step(client)
                rounds += 1
                if delay and await accepted(client, url) >= events:
                    break
                if delay:
                    await asyncio.sleep(min(delay, 0.05))
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            return {"seconds": elapsed, "rounds": rounds, "cpu_seconds": cpu,
                    "received": await accepted(client, url)}
    finally:
        await worker.lease.release()
        await redis.aclose()
        await pool.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--type", choices=("lago", "openmeter", "stripe"), default="lago")
    parser.add_argument("--batch", type=int, help="events per request (default: the receiver's maximum)")
    args = parser.parse_args()
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.support.fake_billing", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with throwaway_database("lp_bench") as dsn, redis_prefix() as prefix:
            filled = await fill(dsn, args.events)
            print(f"filled {args.events:,} charges (ledger + outbox trigger + usage rows) in {filled:.1f} s",
                  flush=True)
            url = f"http://127.0.0.1:{port}"
            r = await drain(dsn, prefix, args.events, args.type, args.batch, url)
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    rate = r["received"] / r["seconds"]
    print(f"{args.type}: drained {r['received']:,} events in {r['seconds']:.1f} s = {rate:,.0f} events/s "
          f"({r['rounds']:,} rounds); exporter CPU {r['cpu_seconds']:.1f} s = "
          f"{1000 * r['cpu_seconds'] / r['received'] * 1000:.1f} ms per 1,000 events; load average "
          f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
