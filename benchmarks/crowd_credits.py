"""A crowd of new accounts vs the same accounts once known (issue #23 point 3), on one real proxy.

    python benchmarks/crowd_credits.py [--accounts 3000] [--known 200] [--rates 10,15,20,25,30,40,50,60,80]
                                       [--step-seconds 8] [--rate R] [--workers 1]

Starts the fake provider, a throwaway database, a private Redis key prefix and one ``litellm`` proxy
(credits on; routing, BYOK, health off, so the proxy's own limit is what is measured), then:

1. **Known-account capacity**: ``--known`` accounts are opened, then offered open-loop bursts of
   ``--step-seconds`` at each of ``--rates`` (cycling over those accounts). The highest rate whose
   every request answered 200 while the proxy kept up (``served``) is "the highest rate the proxy
   serves known accounts" (``--rate`` skips the search).
2. **Crowd**: ``--accounts`` accounts that never called, one request each, at that rate, open loop.
3. **Returning**: the same accounts again at the same rate.

Reports status counts (503s!) and p50/p99 of each phase, then waits for the writer and checks the
book: ``litellm-plugins credits verify`` and exactly one starting grant per crowd account.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tests.support.burst import Burst, burst, crowd_audit  # noqa: E402
from tests.support.fake_provider import free_port  # noqa: E402
from tests.support.proxy import KeyFile, ProxyProcess, test_config  # noqa: E402
from tests.support.services import REDIS_URL, redis_prefix, throwaway_database  # noqa: E402

STARTING = 1000  # credits
OFF = {"routing": {"enabled": False}, "byok": {"enabled": False}, "health": {"enabled": False}}


def line(name: str, b: Burst) -> str:
    st = dict(sorted(b.statuses().items()))
    return (f"{name:<22} n={len(b.shots):5d} offered={b.rate():6.1f}/s statuses={st} "
            f"p50={b.latency_ms(0.5):7.1f} ms p99={b.latency_ms(0.99):7.1f} ms "
            f"client late max={b.max_late_ms():6.1f} ms")


def served(b: Burst) -> bool:
    """Every request answered 200, and the proxy kept up: the median latency of the burst's last
    quarter is within 0.5 s of its first quarter's (past its capacity a proxy queues, and the
    latency grows with every request of the burst)."""
    q = max(1, len(b.shots) // 4)
    first, last = (statistics.median(s.latency for s in part) for part in (b.shots[:q], b.shots[-q:]))
    return b.statuses().get(200, 0) == len(b.shots) and last - first < 0.5


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="crowd_"))
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.support.fake_provider", "--port", str(fake_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with throwaway_database("lp_crowd") as dsn, redis_prefix() as prefix:
            keys = KeyFile(workdir / "keys.json")
            known = {f"sk-known-{i:05d}": f"known-{i:05d}" for i in range(args.known)}
            crowd = {f"sk-crowd-{i:06d}": f"crowd-{i:06d}" for i in range(args.accounts)}
            keys.add_users({**known, **crowd})
            credits = {"enabled": True, "starting_grant": STARTING, "spool_dir": str(workdir / "spool")}
            pool = {"db_pool_max_size": args.pool_max} if args.pool_max else {}
            cfg = test_config(f"http://127.0.0.1:{fake_port}/v1",
                              {"litellm_plugins": {"redis_key_prefix": prefix, **OFF, "credits": credits, **pool}})
            env = {"LITELLM_PLUGINS_DATABASE_URL": dsn, "LITELLM_PLUGINS_REDIS_URL": REDIS_URL,
                   "LITELLM_PLUGINS_TEST_KEYS": str(keys.path)}
            proxy = ProxyProcess(cfg, workdir, env, name="crowd", num_workers=args.workers)
            try:
                return await measure(args, proxy, dsn, known, crowd)
            finally:
                proxy.stop()  # before the database goes
    finally:
        fake.terminate()
        fake.wait(timeout=10)


async def capacity(args: argparse.Namespace, proxy: ProxyProcess, known: list[str]) -> float | None:
    """The highest of ``--rates`` the proxy serves for known accounts (``served``), or None."""
    rate = None
    for r in args.rates:
        b = await burst(proxy.url, [known[i % len(known)] for i in range(int(r * args.step_seconds))], r)
        print(line(f"known @ {r:g}/s", b), flush=True)
        if not served(b):
            break
        rate = r
        await asyncio.sleep(2)  # let the writer catch up between steps
    return rate


async def pool_use(dsn: str, stop: asyncio.Event) -> tuple[int, int]:
    """(most connections the proxy had open to its database, most of them busy at once), sampled
    every 50 ms from ``pg_stat_activity`` while a burst runs: what sizing the pool needs to know."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    most = busy = 0
    try:
        while not stop.is_set():
            row = await conn.fetchrow(
                "SELECT count(*) AS n, count(*) FILTER (WHERE state <> 'idle') AS busy FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            most, busy = max(most, row["n"]), max(busy, row["busy"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    finally:
        await conn.close()
    return most, busy


async def sampled(dsn: str, work: Awaitable[Burst]) -> tuple[Burst, tuple[int, int]]:
    """``work``'s result, and ``pool_use`` while it ran."""
    stop = asyncio.Event()
    sampler = asyncio.create_task(pool_use(dsn, stop))
    try:
        result = await work
    finally:
        stop.set()
    return result, await sampler


async def measure(args: argparse.Namespace, proxy: ProxyProcess, dsn: str, known: dict[str, str],
                  crowd: dict[str, str]) -> int:
    proxy.start()
    print(f"proxy {proxy.url} ({args.workers} worker(s)), log {proxy.log_path}", flush=True)
    print(line("open known (10/s)", await burst(proxy.url, list(known), 10.0)), flush=True)
    rate = args.rate or await capacity(args, proxy, list(known))
    if rate is None:
        print("the proxy served none of the rates for known accounts", flush=True)
        return 1
    print(f"crowd rate: {rate:g}/s ({'given' if args.rate else 'the highest served for known accounts'})",
          flush=True)
    await asyncio.sleep(2)

    first, (conns, busy) = await sampled(dsn, burst(proxy.url, list(crowd), rate))
    print(line(f"crowd NEW @ {rate:g}/s", first) + f" db connections open/busy max={conns}/{busy}", flush=True)
    await asyncio.sleep(2)
    again, (conns, busy) = await sampled(dsn, burst(proxy.url, list(crowd), rate))
    print(line(f"crowd returning @ {rate:g}/s", again) + f" db connections open/busy max={conns}/{busy}",
          flush=True)

    ok = first.statuses().get(200, 0) + again.statuses().get(200, 0)
    audit = await crowd_audit(dsn, [f"user:{u}" for u in crowd.values()], ok, STARTING * 1_000_000)
    verify = proxy.credits_verify()
    print(f"book: {audit} (want settled={ok}, opened={args.accounts}, grants={args.accounts}, odd_grants=0); "
          f"credits verify: rc={verify.returncode} {verify.stdout.strip()[-200:]}", flush=True)
    unavailable = first.statuses().get(503, 0) + again.statuses().get(503, 0)
    print(f"503s: new={first.statuses().get(503, 0)} returning={again.statuses().get(503, 0)}", flush=True)
    good = (unavailable == 0 and verify.returncode == 0 and audit["opened"] == args.accounts
            and audit["grants"] == args.accounts and audit["odd_grants"] == 0)
    return 0 if good else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accounts", type=int, default=3000)
    p.add_argument("--known", type=int, default=200)
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[10, 15, 20, 25, 30, 40, 50, 60, 80])
    p.add_argument("--step-seconds", type=float, default=8.0)
    p.add_argument("--rate", type=float, default=None, help="skip the search: the crowd's rate")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--pool-max", type=int, default=0, help="db_pool_max_size (0: the default)")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
