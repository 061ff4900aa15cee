"""Microbenchmark of the credits pieces (microseconds per operation), against real Postgres + Redis.

    python benchmarks/micro_credits.py [--n 2000]

Measures, in this process (one client, loopback):
  * estimate   — prompt-token estimate used for the hold (vs litellm.token_counter for reference)
  * hold       — the whole request-path work of ``async_pre_call_hook`` on a warm account
                 (account, tier, worst case, one Redis Lua call, queue the Postgres row)
  * settle-q   — ``async_log_success_event`` work (background; queue settle + usage row)
  * flush      — the writer's Postgres + Redis work per request, amortised over batches
                 (hold rows, settle transaction, usage row, Redis release); then the CPU one
                 flush costs this process at batch sizes 1, 10 and 50
  * hold (Postgres path) — the same ``async_pre_call_hook`` work while Redis is unreachable
                 (``on_redis_error: postgres``: one ``credits_hold_pg`` call, row-locked on the
                 account; docs/credits.md "Redis down"), and a settle written straight to Postgres
Needs the dev services (scripts/dev-env.sh starts them) or TEST_POSTGRES_ADMIN_DSN / TEST_REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

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
from litellm_plugins.credits.pricing import estimate_prompt_tokens  # noqa: E402
from tests.support.services import REDIS_URL, throwaway_database  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import cpu_by_group  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def per_op(samples: list[float]) -> str:
    s = sorted(samples)
    return (f"p50 {statistics.median(s) * 1e6:8.1f} us   p90 {s[int(len(s) * 0.9)] * 1e6:8.1f} us   "
            f"mean {statistics.fmean(s) * 1e6:8.1f} us")


def success_kwargs(req: dict) -> dict:
    """What LiteLLM hands ``async_log_success_event`` (the parts credits reads)."""
    return {"litellm_call_id": req["litellm_call_id"], "response_cost": 0.0000123,
            "litellm_params": {"metadata": req["metadata"]},
            "standard_logging_object": {"response_cost": 0.0000123, "prompt_tokens": 40,
                                        "completion_tokens": 30, "model_group": "gpt-4o-mini",
                                        "startTime": time.time(), "endTime": time.time(),
                                        "metadata": {"user_api_key_user_id": "bench"}}}


def stream_end_cost(n: int) -> list[float]:
    """What ``Engine.stream_chunks`` adds before ``[DONE]`` besides the journal send: LiteLLM's own
    cost calculation (the request's logging object) on the chunk that carries the usage."""
    from datetime import datetime

    from litellm.litellm_core_utils.litellm_logging import Logging
    from litellm.types.utils import ModelResponseStream, Usage

    logging_obj = Logging(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
                          call_type="acompletion", start_time=datetime.now(), litellm_call_id="bench",
                          function_id="bench")
    logging_obj.update_environment_variables(model="gpt-4o-mini", user=None, optional_params={}, litellm_params={},
                                             custom_llm_provider="openai")
    chunk = ModelResponseStream(model="gpt-4o-mini", usage=Usage(prompt_tokens=40, completion_tokens=30,
                                                                 total_tokens=70))
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        logging_obj.response_cost_calculator(result=chunk)
        t.append(time.perf_counter() - t0)
    return t


ALLOWANCES = {"allowances": {"pro": {"amount": 1_000_000, "period": "month"}}}
CAPS = {"caps": {"pro": {"day": 10 ** 9}}}


async def main(n: int, allowances: bool = False, caps: bool = False) -> None:
    config = load_config_file(ROOT / "proxy_config.yaml")
    data = {"model": "gpt-4o-mini", "max_tokens": 256,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "Explain two-phase commit in three sentences. " * 4}]}
    import litellm

    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        estimate_prompt_tokens(data, 3.0)
        t.append(time.perf_counter() - t0)
    print(f"estimate (bytes/3)       {per_op(t)}")
    t = []
    for _ in range(min(n, 500)):
        t0 = time.perf_counter()
        litellm.token_counter(model="gpt-4o-mini", messages=data["messages"])
        t.append(time.perf_counter() - t0)
    print(f"litellm.token_counter    {per_op(t)}   (reference, not used)")
    print(f"stream end: LiteLLM cost {per_op(stream_end_cost(n))}   (request path, once per stream, before [DONE])")

    async with throwaway_database("lp_bench") as dsn:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        pool = await create_pool(dsn, 1, 4)
        redis = aioredis.Redis.from_url(REDIS_URL)
        prefix = f"lp_bench_{uuid.uuid4().hex[:8]}:"
        settings = parse_settings({"database_url": dsn, "redis_url": REDIS_URL, "redis_key_prefix": prefix,
                                   "credits": {"enabled": True, "starting_grant": 1_000_000,
                                               "spool_dir": f"/tmp/lp-bench-spool-{os.getpid()}",
                                               **(ALLOWANCES if allowances else {}), **(CAPS if caps else {})}})
        print(f"the caller's tier has an allowance: {allowances}, a spend cap: {caps}")
        rt = runtime.Runtime(settings=settings, config=config, pool=pool, redis=redis)
        runtime.install(rt)
        eng = Engine(rt)
        auth = UserAPIKeyAuth(api_key="h", token="h", user_id="bench", metadata={"tier": "pro"})
        try:
            await eng.pre_call(auth, {**data, "metadata": {}}, "acompletion")  # warm: opens the account
            await eng.writer.flush()
            holds, queues, requests = [], [], []
            for i in range(n):
                req = {**data, "metadata": {}, "litellm_call_id": f"c{i}"}
                t0 = time.perf_counter()
                await eng.pre_call(auth, req, "acompletion")
                holds.append(time.perf_counter() - t0)
                requests.append(req)
            for i, req in enumerate(requests):
                kwargs = success_kwargs(req)
                t0 = time.perf_counter()
                eng.on_success(kwargs)
                queues.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await eng.writer.flush()
            flush_total = time.perf_counter() - t0
            print(f"hold (request path)      {per_op(holds)}   (redis-py, as when the send-only connection is down)")
            print(f"settle+usage enqueue     {per_op(queues)}")
            print(f"writer flush per request {flush_total / n * 1e6:8.1f} us   ({n} holds+settles+usage rows "
                  f"in {flush_total * 1000:.0f} ms, off the request path)")
            async with pool.acquire() as c:
                settled = await c.fetchval("SELECT count(*) FROM credit_ledger WHERE kind = 'settle'")
            assert settled == n, settled
            # As in the proxy: through the send-only connection (one write, one await), and carved
            # from a lease (lease.py: one write, no await; the answer is read later).
            assert await eng.cache.sender.connect()
            for label, lease_requests in (("exact, send-only conn.", 0), ("carved from a lease", 1000)):
                eng.leases.requests = lease_requests
                samples = []
                for i in range(n):
                    req = {**data, "metadata": {}, "litellm_call_id": f"{label[0]}{i}"}
                    t0 = time.perf_counter()
                    await eng.pre_call(auth, req, "acompletion")
                    samples.append(time.perf_counter() - t0)
                await eng.cache.sender.request("PING")  # every carve answered before the next part
                print(f"hold ({label}) {per_op(samples)}   carved so far: {eng.leases.stats['carved']}")
            await eng.leases.close()
            await eng.cache.sender.close()
            # What one flush costs the proxy's event loop at the batch sizes a worker sees (one client
            # at ~60 req/s and a 0.2 s interval: ~12 requests per batch), in CPU of this process.
            for size in (1, 10, 50):
                cpu = wall = pg = rd = 0.0
                rounds = max(5, 300 // size)
                for r in range(rounds):
                    for i in range(size):
                        req = {**data, "metadata": {}, "litellm_call_id": f"b{size}-{r}-{i}"}
                        await eng.pre_call(auth, req, "acompletion")
                        eng.on_success(success_kwargs(req))
                    g0 = cpu_by_group()
                    c0, w0 = time.process_time(), time.perf_counter()
                    await eng.writer.flush()
                    cpu += time.process_time() - c0
                    wall += time.perf_counter() - w0
                    g1 = cpu_by_group()
                    pg += g1["postgres"] - g0["postgres"]
                    rd += g1["redis"] - g0["redis"]
                print(f"flush of {size:3d} requests   CPU {cpu / rounds / size * 1e6:8.1f} us/request   "
                      f"wall {wall / rounds * 1e3:6.2f} ms/flush   Postgres CPU {pg / rounds / size * 1e6:8.1f} "
                      f"us/request   Redis CPU {rd / rounds / size * 1e6:6.1f} us/request   ({rounds} flushes)")
            await postgres_path(n, dsn, pool, config, data, auth)
        finally:
            runtime.install(None)
            keys = [k async for k in redis.scan_iter(match=prefix + "*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
            await pool.close()


async def postgres_path(n: int, dsn: str, pool: asyncpg.Pool, config: dict, data: dict,
                        auth: UserAPIKeyAuth) -> None:
    """Holds and settles while Redis is unreachable (nothing listens on port 1): the Postgres path."""
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    settings = parse_settings({"database_url": dsn, "redis_url": "redis://127.0.0.1:1/0",
                               "credits": {"enabled": True, "starting_grant": 1_000_000,
                                           "spool_dir": f"/tmp/lp-bench-spool-{os.getpid()}"}})
    rt = runtime.Runtime(settings=settings, config=config, pool=pool, redis=dead)
    runtime.install(rt)
    eng = Engine(rt)
    t0 = time.perf_counter()
    await eng.pre_call(auth, {**data, "metadata": {}}, "acompletion")  # switches, waits out the grace
    print(f"switch to Postgres       first hold after {time.perf_counter() - t0:.2f} s "
          f"(grace {eng.pg.grace:.1f} s: writer interval + 2.5 s)")
    holds, settles = [], []
    for i in range(n):
        req = {**data, "metadata": {}, "litellm_call_id": f"p{i}"}
        t0 = time.perf_counter()
        await eng.pre_call(auth, req, "acompletion")
        holds.append(time.perf_counter() - t0)
        records = eng.success_records(success_kwargs(req))
        t0 = time.perf_counter()
        assert await eng.writer.journal(records)  # written to Postgres at once (the journal's job)
        settles.append(time.perf_counter() - t0)
    print(f"hold (Postgres path)     {per_op(holds)}   ({eng.pg.stats['holds']} row-locked holds)")
    print(f"settle (Postgres path)   {per_op(settles)}   (settle + usage row straight to Postgres)")
    async with pool.acquire() as c:
        settled = await c.fetchval("SELECT count(*) FROM credit_ledger WHERE kind = 'settle' "
                                   "AND call_id LIKE 'p%'")
    assert settled == n, settled
    await dead.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--allowances", action="store_true", help="the caller's tier gets a monthly allowance")
    parser.add_argument("--caps", action="store_true", help="the caller's tier gets a daily spend cap")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.allowances, args.caps))
