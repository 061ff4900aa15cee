"""What the credits_exhausted trigger (migration 20261202005000) costs the credits writer.

    python benchmarks/bench_billing_exhausted.py

Times the writer's 500-row ``usage.store.insert_rows`` batch in a throwaway database with the
``usage_log`` trigger on and off, interleaved (the shared VM's load hits both alike), for a batch
with no 402 rows (one ``WHEN`` comparison per row) and one of only 402 rows (each reads its
account's version and inserts / conflicts on the outbox). Background cost only: the request path
is unchanged.
"""
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import asyncpg  # noqa: E402
from litellm_plugins.core.migrator import migrate  # noqa: E402
from litellm_plugins.usage import store  # noqa: E402
from tests.support.services import throwaway_database  # noqa: E402

async def main():
    async with throwaway_database("lp_bench_exh") as dsn:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": "litellm_plugins"})
        try:
            await migrate(conn)
            await conn.executemany("INSERT INTO credit_accounts (account, balance, version) VALUES ($1, 0, 1)",
                                   [(f"user:u{j}",) for j in range(500)])
            n = iter(range(10**6))
            def batch(refused):
                b = next(n)
                return [{"id": f"w{b}-{j}", "call_id": f"w{b}-{j}", "account": f"user:u{j}", "requested_model": "eco", "byok": False, "stream": False, "prompt_tokens": 0, "completion_tokens": 0, "credits_charged": 0,
                         "status": "rejected" if refused else "success",
                         "error_type": "insufficient_credits" if refused else None, "ts": time.time()}
                        for j in range(500)]
            for refused in (False, True):
                ts = {True: [], False: []}
                for i in range(61):  # interleaved on/off, so the shared VM's load hits both alike
                    for on in (True, False):
                        await conn.execute(f"ALTER TABLE usage_log {'ENABLE' if on else 'DISABLE'} TRIGGER billing_outbox_after_exhausted_usage")
                        rows = batch(refused)
                        t = time.perf_counter(); await store.insert_rows(conn, rows)
                        if i: ts[on].append((time.perf_counter() - t) * 1000)
                for on in (True, False):
                    print(f"{'100%' if refused else '0%'} 402 rows, trigger {'on ' if on else 'off'}: median {statistics.median(ts[on]):6.1f} ms"
                          f"  p90 {sorted(ts[on])[int(len(ts[on])*0.9)]:6.1f} ms (500-row batch, 60 runs)")
        finally:
            await conn.close()
asyncio.run(main())
