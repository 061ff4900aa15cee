"""How the credits hot path scales: accounts in the table, and concurrency on ONE hot account.

    python benchmarks/scale_credits.py [--sizes 1,1000,100000,1000000] [--n 1000]
                                       [--concurrency 1,8,32,64] [--reconcile 1000,10000,100000]

Uses the credits capability's own code (``credits.engine.Engine``: ``pre_call`` is what
``async_pre_call_hook`` runs, ``on_success`` what ``async_log_success_event`` runs, ``Writer.flush``
the background writer), against a throwaway database on the dev Postgres and a private Redis.

Per table size N (accounts bulk-inserted with ``generate_series``, each with its grant ledger row):
  * hold (warm)   — ``pre_call`` on a random account already in Redis (the request path)
  * hold (cold)   — ``pre_call`` on a random account not in Redis yet (first request / after a
                    flush: one batched ``credits_open_accounts`` + Redis load + hold)
  * hold+settle   — hold, ``on_success``, then a writer flush of just that request (hold row,
                    settle transaction, usage row, Redis release): the whole per-request cost if
                    nothing were batched; ops/s = 1 / mean
  * batched       — n requests held and settled, one writer flush: ops/s of the book of record
Hot account: C concurrent holders (coroutines) spread over W = min(C, 4) engines (each engine =
one "worker" with its own writer flushing every 0.2 s, as in the proxy) on ONE account, for --n
requests: hold p50/p99, requests/s until every settle is in Postgres, and the final balance check.
Reconciler: one ``reconcile_once`` round with R accounts cached in Redis (it refreshes every cached
account each round).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from litellm.proxy._types import UserAPIKeyAuth  # noqa: E402

from litellm_plugins.core import runtime  # noqa: E402
from litellm_plugins.core.db import create_pool  # noqa: E402
from litellm_plugins.core.migrator import migrate  # noqa: E402
from litellm_plugins.core.settings import load_config_file, parse_settings  # noqa: E402
from litellm_plugins.credits.engine import Engine  # noqa: E402
from tests.support.private_services import private_redis  # noqa: E402
from tests.support.services import throwaway_database  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BALANCE = 10**15  # units: never runs out during a run
COST = 0.0000123  # USD per request -> 1230 units at 100 credits/USD
EXPECTED_CHARGE = 1230
DATA = {"model": "gpt-4o-mini", "max_tokens": 256,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "Explain two-phase commit in three sentences. " * 4}]}


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] * 1e6


def stats(samples: list[float]) -> tuple[float, float, float]:
    """(p50 µs, p99 µs, ops/s from the mean)."""
    return statistics.median(samples) * 1e6, pct(samples, 0.99), 1 / statistics.fmean(samples)


def auth_for(account_no: int) -> UserAPIKeyAuth:
    return UserAPIKeyAuth(api_key="h", token="h", user_id=f"bench-{account_no}", metadata={"tier": "pro"})


def success_kwargs(req: dict[str, Any], user: str) -> dict[str, Any]:
    now = time.time()
    return {"litellm_call_id": req["litellm_call_id"], "response_cost": COST,
            "litellm_params": {"metadata": req["metadata"]},
            "standard_logging_object": {"response_cost": COST, "prompt_tokens": 40, "completion_tokens": 30,
                                        "model_group": "gpt-4o-mini", "startTime": now, "endTime": now,
                                        "metadata": {"user_api_key_user_id": user}}}


def request(i: int) -> dict[str, Any]:
    return {**DATA, "metadata": {}, "litellm_call_id": f"scale-{uuid.uuid4().hex[:12]}-{i}"}


async def grow(conn: asyncpg.Connection, have: int, want: int) -> float:
    t0 = time.perf_counter()
    if want > have:
        await conn.execute(
            "INSERT INTO credit_accounts (account, balance, version) "
            "SELECT 'user:bench-' || g, $3::bigint, 1 FROM generate_series($1::int, $2::int) g", have + 1, want, BALANCE)
        await conn.execute(
            "INSERT INTO credit_ledger (account, kind, delta, amount, idempotency_key, balance_after, note) "
            "SELECT 'user:bench-' || g, 'grant', $3::bigint, $3::bigint, 'starting-grant:user:bench-' || g, "
            "$3::bigint, 'starting grant' FROM generate_series($1::int, $2::int) g", have + 1, want, BALANCE)
        await conn.execute("ANALYZE credit_accounts; ANALYZE credit_ledger")
    return time.perf_counter() - t0


def make_engine(rt: runtime.Runtime) -> Engine:
    return Engine(rt)


async def by_size(rt: runtime.Runtime, sizes: list[int], n: int) -> list[str]:
    lines = ["| accounts in table | hold warm p50 / p99 µs | hold cold p50 / p99 µs | hold+settle flushed each "
             "p50 / p99 µs (ops/s) | batched hold+settle ops/s |",
             "|---:|---:|---:|---:|---:|"]
    eng = make_engine(rt)
    async with rt.pool.acquire() as conn:  # warm-up: first connection, price table, scripts loaded
        await grow(conn, 0, 1)
    await eng.pre_call(auth_for(1), request(0), "acompletion")
    await eng.writer.flush()
    have = 1
    for size in sizes:
        async with rt.pool.acquire() as conn:
            took = await grow(conn, have, size)
        have = max(have, size)
        print(f"# {size:>9,} accounts (insert {took:.1f}s)", flush=True)
        await rt.redis.flushdb()
        picks = random.sample(range(1, size + 1), min(size, n))
        cold, warm, both = [], [], []
        for i, acct in enumerate(picks):                        # first touch: cold
            req = request(i)
            t0 = time.perf_counter()
            await eng.pre_call(auth_for(acct), req, "acompletion")
            cold.append(time.perf_counter() - t0)
        await eng.writer.flush()
        for i in range(n):                                      # warm, random account of the sample
            req = request(i)
            auth = auth_for(random.choice(picks))
            t0 = time.perf_counter()
            await eng.pre_call(auth, req, "acompletion")
            warm.append(time.perf_counter() - t0)
        eng.writer.queue.clear()
        eng.writer.unflushed.clear()
        await rt.redis.flushdb()
        for acct in picks:                                      # re-warm
            await eng.ensure_cached(f"user:bench-{acct}")
        for i in range(min(n, 500)):                            # hold + settle + flush, one at a time
            acct = random.choice(picks)
            req = request(i)
            t0 = time.perf_counter()
            await eng.pre_call(auth_for(acct), req, "acompletion")
            eng.on_success(success_kwargs(req, f"bench-{acct}"))
            await eng.writer.flush()
            both.append(time.perf_counter() - t0)
        t0 = time.perf_counter()                                # batched
        for i in range(n):
            acct = random.choice(picks)
            req = request(i)
            await eng.pre_call(auth_for(acct), req, "acompletion")
            eng.on_success(success_kwargs(req, f"bench-{acct}"))
        await eng.writer.flush()
        batched = n / (time.perf_counter() - t0)
        w, c, b = stats(warm), stats(cold), stats(both)
        line = (f"| {size:,} | {w[0]:.0f} / {w[1]:.0f} | {c[0]:.0f} / {c[1]:.0f} | {b[0]:.0f} / {b[1]:.0f} "
                f"({b[2]:,.0f}) | {batched:,.0f} |")
        print(line, flush=True)
        lines.append(line)
    return lines


async def hot_account(rt: runtime.Runtime, levels: list[int], n: int) -> list[str]:
    lines = ["| concurrent holders (engines) | hold p50 / p99 µs | requests/s (held+settled in Postgres) | "
             "settle lag after last hold ms | balance exact |",
             "|---:|---:|---:|---:|---|"]
    hot = 10**9  # a distinct account number per level
    for level in levels:
        hot += 1
        account = f"user:bench-{hot}"
        engines = [make_engine(rt) for _ in range(min(level, 4))]
        tasks = [asyncio.create_task(e.writer.run()) for e in engines]
        async with rt.pool.acquire() as conn:
            await conn.execute("INSERT INTO credit_accounts (account, balance, version) VALUES ($1, $2, 1) "
                               "ON CONFLICT DO NOTHING", account, BALANCE)
            await conn.execute("INSERT INTO credit_ledger (account, kind, delta, amount, idempotency_key) "
                               "VALUES ($1, 'grant', $2, $2, $3) ON CONFLICT DO NOTHING", account, BALANCE,
                               f"starting-grant:{account}")
        await engines[0].ensure_cached(account)
        auth = auth_for(hot)
        holds: list[float] = []
        per = n // level
        charge = None

        async def holder(k: int) -> None:
            eng = engines[k % len(engines)]
            for i in range(per):
                req = request(i)
                t0 = time.perf_counter()
                await eng.pre_call(auth, req, "acompletion")
                holds.append(time.perf_counter() - t0)
                eng.on_success(success_kwargs(req, f"bench-{hot}"))

        t0 = time.perf_counter()
        await asyncio.gather(*(holder(k) for k in range(level)))
        t_held = time.perf_counter()
        total = per * level
        async with rt.pool.acquire() as conn:
            while await conn.fetchval("SELECT count(*) FROM credit_ledger WHERE account = $1 AND kind = 'settle'",
                                      account) < total:
                if time.perf_counter() - t_held > 120:
                    break
                await asyncio.sleep(0.01)
            t_done = time.perf_counter()
            bal = await conn.fetchval("SELECT balance FROM credit_accounts WHERE account = $1", account)
            settled = await conn.fetchval("SELECT coalesce(sum(-delta), 0) FROM credit_ledger WHERE account = $1 "
                                          "AND kind = 'settle'", account)
            charge = settled // total if total else 0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        exact = bal == BALANCE - settled and settled == total * EXPECTED_CHARGE
        p = stats(holds)
        line = (f"| {level} ({len(engines)}) | {p[0]:.0f} / {p[1]:.0f} | {total / (t_done - t0):,.0f} | "
                f"{(t_done - t_held) * 1000:.0f} | {'yes' if exact else 'NO'} ({total} x {charge} units) |")
        print(line, flush=True)
        lines.append(line)
    return lines


async def reconciler(rt: runtime.Runtime, counts: list[int]) -> list[str]:
    lines = ["| accounts cached in Redis | one reconcile round | per cached account |", "|---:|---:|---:|"]
    eng = make_engine(rt)
    for count in counts:
        await rt.redis.flushdb()
        prefix = rt.settings.redis_key_prefix
        for start in range(1, count + 1, 5000):
            async with rt.redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + 5000, count + 1)):
                    pipe.hset(f"{prefix}credits:acct:user:bench-{i}", mapping={"balance": BALANCE, "held": 0,
                                                                               "version": 1})
                await pipe.execute()
        t0 = time.perf_counter()
        report = await eng.reconcile_once()
        took = time.perf_counter() - t0
        line = f"| {count:,} | {took * 1000:,.0f} ms | {took / count * 1e6:.0f} µs |  {report}"
        print(line, flush=True)
        lines.append(f"| {count:,} | {took * 1000:,.0f} ms | {took / count * 1e6:.0f} µs |")
    return lines


async def main(args: argparse.Namespace) -> None:
    sizes = [int(x) for x in args.sizes.split(",") if x]
    levels = [int(x) for x in args.concurrency.split(",") if x]
    rec = [int(x) for x in args.reconcile.split(",") if x]
    config = load_config_file(ROOT / "proxy_config.yaml")
    with private_redis() as server:
        async with throwaway_database("lp_scale") as dsn:
            conn = await asyncpg.connect(dsn)
            await migrate(conn)
            await conn.close()
            pool = await create_pool(dsn, 2, 16)
            redis = aioredis.Redis.from_url(server.url)
            spool = tempfile.mkdtemp(prefix="lp-scale-spool-")
            settings = parse_settings({"database_url": dsn, "redis_url": server.url, "redis_key_prefix": "scale:",
                                       "credits": {"enabled": True, "starting_grant": 1000, "spool_dir": spool}})
            rt = runtime.Runtime(settings=settings, config=config, pool=pool, redis=redis)
            runtime.install(rt)
            try:
                out = ["### By number of accounts", *await by_size(rt, sizes, args.n)] if sizes else []
                if levels:
                    out += ["", "### One hot account", *await hot_account(rt, levels, args.n)]
                if rec:
                    out += ["", "### Reconciler round", *await reconciler(rt, rec)]
                print("\n" + "\n".join(out))
            finally:
                runtime.install(None)
                await redis.aclose()
                await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,1000,100000,1000000")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--reconcile", default="1000,10000,100000")
    asyncio.run(main(parser.parse_args()))
