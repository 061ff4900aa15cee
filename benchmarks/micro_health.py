"""Microbenchmark of the health capability's own pieces (microseconds per operation).

    python benchmarks/micro_health.py            # needs the local Redis of scripts/dev-env.sh

* ``filter``: ``HealthHook.async_filter_deployments`` — the only health code on the request path
  (memory only): nothing unhealthy (the common case), one of N deployments open, all open (keep-all).
* ``observe``: one outcome into the Redis circuit (Lua script), what each logging callback costs
  after the response.
* ``refresh``: one refresher pass (pipelined HMGET of every deployment + publish), every 0.5 s/worker.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm_plugins.health import view  # noqa: E402
from litellm_plugins.health.circuit import Circuits, blocked_sets, now_ms  # noqa: E402
from litellm_plugins.health.hook import health_hook  # noqa: E402

REDIS_URL = os.environ.get("LITELLM_PLUGINS_REDIS_URL", "redis://127.0.0.1:6379/0")


def _deps(n: int) -> list[dict]:
    return [{"model_name": "g", "litellm_params": {"model": f"openai/m{i}"}, "model_info": {"id": f"id{i}"}}
            for i in range(n)]


async def _time(fn, n: int) -> float:
    """Median of 5 runs of n calls, in microseconds per call."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


async def main() -> None:
    rows: list[tuple[str, float]] = []
    for n in (2, 5, 20):
        deps = _deps(n)
        view.publish(frozenset(), frozenset())
        rows.append((f"filter, {n} deployments, none unhealthy",
                     await _time(lambda: health_hook.async_filter_deployments("g", deps, None), 20000)))
        view.publish(frozenset({"id0"}))
        rows.append((f"filter, {n} deployments, 1 open",
                     await _time(lambda: health_hook.async_filter_deployments("g", deps, None), 20000)))
        view.publish(frozenset(d["model_info"]["id"] for d in deps))
        rows.append((f"filter, {n} deployments, all open (keep all)",
                     await _time(lambda: health_hook.async_filter_deployments("g", deps, None), 20000)))
    view.publish(frozenset(), frozenset())

    import redis.asyncio as aioredis
    client = aioredis.Redis.from_url(REDIS_URL)
    prefix = f"bench_health_{uuid.uuid4().hex[:8]}:"
    circuits = Circuits(client, prefix)
    try:
        rows.append(("observe (Lua record, success)", await _time(
            lambda: circuits.record("b1", True, source="traffic", threshold=5, cooldown_s=30, alpha=0.2,
                                    latency_ms=12.0), 500)))
        ids = [f"id{i}" for i in range(15)]

        async def refresh() -> None:
            rows_ = await circuits.read_routing(ids)
            view.publish(*blocked_sets(ids, rows_, 30000, now_ms()))

        rows.append(("refresh pass, 15 deployments", await _time(refresh, 500)))
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        view.publish(frozenset(), frozenset())
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:9.2f} µs/op")


if __name__ == "__main__":
    asyncio.run(main())
