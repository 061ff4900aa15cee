"""How fast the console's dashboard queries are on a big usage log.

    python benchmarks/bench_console.py [--rows 1000000] [--accounts 2000] [--repeat 5]

Fills ``usage_log`` of a throwaway database (migrated by our own migrator) with ``--rows`` rows over
the last 90 days (``generate_series``; one heavy account gets 10% of all rows, the rest spread over
``--accounts``), ANALYZEs it, then times what the console's usage screen asks for — exactly the code
behind ``GET /plugins/usage/dashboard`` (``usage.store.dashboard``: totals, series, by level /
provider / model, top accounts, for every range the console offers (day .. year), one account and all
accounts, read from the rollups of migration 20261201002000 plus the raw rows of
the partial hours at the range's ends; ``usage.store.dashboard_raw``, the same from raw rows only, for
comparison) plus the first page of the requests table (``usage.store.query``) and the admin accounts
page (``credits.store.accounts``) — median and max of ``--repeat`` runs after one warm-up. Then the
write side: the writer's 500-row ``insert_rows`` batch with the rollup triggers and without them.
The fill itself is one INSERT, so its time includes the triggers summing a million rows (the same
work as the migration's backfill). Postgres is the dev server (127.0.0.1:5432); nothing else is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402

from litellm_plugins.core.migrator import migrate  # noqa: E402
from litellm_plugins.credits import store as credits_store  # noqa: E402
from litellm_plugins.usage import store  # noqa: E402
from tests.support.services import throwaway_database  # noqa: E402

HEAVY = "user:heavy"

FILL = """
INSERT INTO usage_log (id, call_id, account, user_id, requested_model, power_level, model_group, provider, byok,
                       prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, stream, status, created_at)
SELECT 'r' || i, 'c' || i,
       CASE WHEN i % 10 = 0 THEN 'user:heavy' ELSE 'user:u' || (i % $2) END,
       CASE WHEN i % 10 = 0 THEN 'heavy' ELSE 'u' || (i % $2) END,
       (ARRAY['eco','balanced','precision','gpt-4o-mini','claude-sonnet-4'])[1 + i % 5],
       (ARRAY['eco','balanced','precision','custom','custom'])[1 + i % 5],
       (ARRAY['deepinfra-llama-3.1-8b','gpt-4o-mini','claude-sonnet-4','gpt-4o-mini','claude-sonnet-4'])[1 + i % 5],
       (ARRAY['deepinfra','openai','anthropic','openai','anthropic'])[1 + i % 5],
       i % 7 = 0, 100 + i % 900, 10 + i % 300, (i % 1000) * 0.000001, (i % 1000) * 100, 50 + i % 2000, i % 3 = 0,
       CASE WHEN i % 50 = 0 THEN 'failure' WHEN i % 97 = 0 THEN 'rejected' ELSE 'success' END,
       now() - (i::float8 / $1) * interval '90 days'
FROM generate_series(1, $1) AS i
"""


async def timed(fn, repeat: int) -> tuple[float, float]:
    await fn()  # warm-up (plans, buffers)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), max(samples)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    async with throwaway_database("lp_bench") as dsn:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": "litellm_plugins"})
        try:
            await migrate(conn)
            t0 = time.perf_counter()
            await conn.execute(FILL, args.rows, args.accounts)
            await conn.execute("INSERT INTO credit_accounts (account, balance) SELECT DISTINCT account, 1000000000 "
                               "FROM usage_log")
            await conn.execute("VACUUM ANALYZE")  # what autovacuum does after bulk inserts (visibility map)
            print(f"filled {args.rows:,} rows over 90 days in {time.perf_counter() - t0:.1f} s "
                  f"({args.accounts} accounts + {HEAVY} with 10%)")
            now = datetime.now(timezone.utc)
            month = now - timedelta(days=30)
            n_heavy = await conn.fetchval("SELECT count(*) FROM usage_log WHERE account = $1 AND created_at >= $2",
                                          HEAVY, month)
            n_all = await conn.fetchval("SELECT count(*) FROM usage_log WHERE created_at >= $1", month)
            cases = [
                (f"one account, month of charts ({n_heavy:,} rows)",
                 lambda: store.dashboard(conn, store.UsageFilter(account=HEAVY, since=month), "day", tops=False)),
                ("one small account, month of charts",
                 lambda: store.dashboard(conn, store.UsageFilter(account="user:u7", since=month), "day", tops=False)),
                (f"all accounts, month of charts + top accounts ({n_all:,} rows)",
                 lambda: store.dashboard(conn, store.UsageFilter(since=month), "day", tops=True)),
                ("all accounts, month, filtered provider=openai",
                 lambda: store.dashboard(conn, store.UsageFilter(since=month, provider="openai"), "day", tops=True)),
                ("all accounts, day (hour buckets)",
                 lambda: store.dashboard(conn, store.UsageFilter(since=now - timedelta(days=1)), "hour", tops=True)),
                ("all accounts, quarter (week buckets, all 90 days)",
                 lambda: store.dashboard(conn, store.UsageFilter(since=now - timedelta(days=91)), "week", tops=True)),
                ("all accounts, year (month buckets) + top accounts",
                 lambda: store.dashboard(conn, store.UsageFilter(since=now - timedelta(days=365)), "month", tops=True)),
                ("all accounts, quarter, filtered provider=openai",
                 lambda: store.dashboard(conn, store.UsageFilter(since=now - timedelta(days=91), provider="openai"),
                                         "week", tops=True)),
                ("one heavy account, day (hour buckets)",
                 lambda: store.dashboard(conn, store.UsageFilter(account=HEAVY, since=now - timedelta(days=1)),
                                         "hour", tops=False)),
                ("one heavy account, quarter (week buckets)",
                 lambda: store.dashboard(conn, store.UsageFilter(account=HEAVY, since=now - timedelta(days=91)),
                                         "week", tops=False)),
                ("one heavy account, year (month buckets)",
                 lambda: store.dashboard(conn, store.UsageFilter(account=HEAVY, since=now - timedelta(days=365)),
                                         "month", tops=False)),
                ("raw rows only: one heavy account, month",
                 lambda: store.dashboard_raw(conn, store.UsageFilter(account=HEAVY, since=month), "day", tops=False)),
                ("raw rows only: all accounts, month + top accounts",
                 lambda: store.dashboard_raw(conn, store.UsageFilter(since=month), "day", tops=True)),
                ("requests table, first page (one account)",
                 lambda: store.query(conn, store.UsageFilter(account=HEAVY, since=month), 20, 0)),
                ("requests table, first page (all accounts)",
                 lambda: store.query(conn, store.UsageFilter(since=month), 20, 0)),
                ("admin accounts page (100, with last activity)",
                 lambda: credits_store.accounts(conn, None, 100, 0)),
            ]
            print(f"{'query':<62} {'median ms':>10} {'max ms':>9}")
            for name, fn in cases:
                med, worst = await timed(fn, args.repeat)
                print(f"{name:<62} {med:>10.1f} {worst:>9.1f}")
            batches = iter(range(10**6))

            def batch() -> list[dict]:
                b = next(batches)
                ts = (now - timedelta(minutes=5)).timestamp()
                return [{"id": f"w{b}-{j}", "call_id": f"w{b}-{j}", "account": f"user:u{j % args.accounts}",
                         "requested_model": "eco", "power_level": "eco", "model_group": "gpt-4o-mini",
                         "provider": "openai", "byok": j % 7 == 0, "prompt_tokens": 100, "completion_tokens": 20,
                         "cost_usd": "0.000012", "credits_charged": 1200, "latency_ms": 300 + j,
                         "stream": False, "status": "success", "ts": ts} for j in range(500)]

            for label, enabled in (("with rollup triggers", True), ("triggers disabled", False)):
                if not enabled:
                    await conn.execute("ALTER TABLE usage_log DISABLE TRIGGER USER")
                med, worst = await timed(lambda: store.insert_rows(conn, batch()), args.repeat)
                print(f"{'writer batch, 500 new rows, ' + label:<62} {med:>10.1f} {worst:>9.1f}")
            await conn.execute("ALTER TABLE usage_log ENABLE TRIGGER USER")
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
