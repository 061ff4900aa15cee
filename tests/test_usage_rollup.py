"""The dashboard rollups (migration 20261201002000) against the raw rows, through real Postgres: rows go in
through the writer's own statement (``usage.store.insert_rows``), including the upsert that turns a
failure into a success and late rows with old timestamps; the migration's backfill of rows that were
there before it. After every step each rollup table must equal a fresh GROUP BY of ``usage_log``, and
``store.dashboard`` (rollups + raw edges) must equal ``store.dashboard_raw`` (raw rows) for every sum."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from litellm_plugins.core.migrator import load_migrations, migrate
from litellm_plugins.usage import store

ROLLUP = "20261201002000_usage_rollup"
NOW = datetime.now(timezone.utc)


def row(i: int, ts: datetime, status: str = "success", **over: Any) -> dict[str, Any]:
    base = {"id": f"r{i}", "call_id": f"c{i}", "account": f"user:u{i % 3}", "user_id": f"u{i % 3}",
            "team_id": None, "key_hash": None, "requested_model": ["auto", "gpt-4o-mini", None][i % 3],
            "power_level": ["eco", "balanced", None][i % 3], "model_group": ["gpt-4o-mini", "claude", None][i % 2],
            "deployment": "d", "provider": ["openai", "anthropic"][i % 2], "byok": i % 4 == 0,
            "prompt_tokens": 10 + i, "completion_tokens": 3 * i, "cost_usd": Decimal(i) / 1000000007,
            "credits_charged": 1000 + 17 * i, "latency_ms": None if i % 11 == 0 else 40 + 37 * i,
            "stream": False, "status": status, "error_type": None if status == "success" else "RateLimitError",
            "ts": ts.timestamp()}
    return {**base, **over}


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"search_path": "litellm_plugins"})


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(database)
    try:
        yield c
    finally:
        await c.close()


_RECOMPUTE = {
    "usage_rollup_hour": ("date_trunc('hour', created_at, 'UTC')", "hour",
                          ["requested_model", "power_level", "model_group", "provider", "byok", "status"]),
    "usage_rollup_day": ("date_trunc('day', created_at, 'UTC')", "day",
                         ["requested_model", "power_level", "model_group", "provider", "byok", "status"]),
    "usage_rollup_account_hour": ("date_trunc('hour', created_at, 'UTC')", "hour",
                                  ["account", "requested_model", "power_level", "model_group", "provider", "byok",
                                   "status"]),
    "usage_rollup_account_day": ("date_trunc('day', created_at, 'UTC')", "day", ["account"]),
}


async def assert_rollups_equal_rows(conn: asyncpg.Connection) -> None:
    """Every rollup row equals the GROUP BY of usage_log it stands for (zero rows left by a subtraction
    are allowed, readers skip them)."""
    for table, (trunc, tcol, dims) in _RECOMPUTE.items():
        keys = ", ".join([trunc] + [d if d in ("byok", "status") else f"COALESCE({d}, '')" for d in dims])
        expected = await conn.fetch(
            f"SELECT {keys}, count(*) AS requests, count(*) FILTER (WHERE status = 'success') AS succeeded, "
            "count(*) FILTER (WHERE byok) AS byok_requests, sum(prompt_tokens) AS prompt_tokens, "
            "sum(completion_tokens) AS completion_tokens, sum(cost_usd) AS cost_usd, "
            "sum(credits_charged) AS credits_charged, "
            "array_agg(usage_latency_bucket(latency_ms)) FILTER (WHERE latency_ms IS NOT NULL) AS buckets "
            f"FROM usage_log GROUP BY {keys} ORDER BY {keys}")
        want = {}
        for r in expected:
            hist = [0] * store.N_LATENCY
            for b in r["buckets"] or []:
                hist[b] += 1
            want[tuple(r)[:len(dims) + 1]] = (r["requests"], r["succeeded"], r["byok_requests"], r["prompt_tokens"],
                                              r["completion_tokens"], r["cost_usd"], r["credits_charged"], hist)
        got = {}
        for r in await conn.fetch(f"SELECT * FROM {table}"):
            if r["requests"] == 0:
                assert not any(r["latency_hist"]) and r["credits_charged"] == 0 and r["cost_usd"] == 0, dict(r)
                continue
            got[tuple(r[c] for c in [tcol] + dims)] = (
                r["requests"], r["succeeded"], r["byok_requests"], r["prompt_tokens"], r["completion_tokens"],
                r["cost_usd"], r["credits_charged"], list(r["latency_hist"]))
        assert got == want, table


def _sums(part: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in part.items() if k != "p50_latency_ms"}


def assert_p50_close(rollup: int | None, exact: int | None) -> None:
    if exact is None:
        assert rollup is None
        return
    # the rollup's p50 is the middle of the bucket that holds the exact one
    b = next(i for i, bound in enumerate(store.LATENCY_BOUNDS + (10**9,)) if exact < bound)
    assert rollup == store.latency_bucket_value(b), (rollup, exact)


async def assert_dashboard_equals_raw(conn: asyncpg.Connection, flt: store.UsageFilter, bucket: str) -> dict:
    tops = flt.account is None
    fast = await store.dashboard(conn, flt, bucket, tops)
    slow = await store.dashboard_raw(conn, flt, bucket, tops)
    assert set(fast) == set(slow)
    assert _sums(fast["totals"]) == _sums(slow["totals"]), flt
    assert_p50_close(fast["totals"]["p50_latency_ms"], slow["totals"]["p50_latency_ms"])
    for name in slow:
        if name == "totals":
            continue
        assert [_sums(r) for r in fast[name]] == [_sums(r) for r in slow[name]], (name, flt)
        for f, s in zip(fast[name], slow[name]):
            assert_p50_close(f["p50_latency_ms"], s["p50_latency_ms"])
    return fast


FILTERS = [
    {}, {"account": "user:u1"}, {"provider": "openai"}, {"model": "gpt-4o-mini"}, {"power_level": "eco"},
    {"byok": True}, {"status": "failure"}, {"account": "user:u0", "status": "success", "byok": False},
]


async def check_everything(conn: asyncpg.Connection) -> None:
    await assert_rollups_equal_rows(conn)
    ranges = [(None, None), (NOW - timedelta(days=30), None),
              # ends inside hours and days: raw edges + hourly + daily pieces
              (NOW - timedelta(days=9, hours=5, minutes=17), NOW - timedelta(hours=2, minutes=41)),
              (NOW - timedelta(minutes=50), None),  # inside the open hour: raw only
              (NOW - timedelta(hours=30, minutes=3), NOW - timedelta(hours=29, minutes=58))]
    for since, until in ranges:
        for extra in FILTERS:
            for bucket in ("hour", "day", "week", "month"):
                await assert_dashboard_equals_raw(conn, store.UsageFilter(since=since, until=until, **extra), bucket)


def spread(n: int, start: int = 0) -> list[dict[str, Any]]:
    """n rows over the last 40 days, at minutes that are not on hour boundaries."""
    return [row(i, NOW - timedelta(days=40) * ((i * 7919) % n) / n - timedelta(minutes=i % 59))
            for i in range(start, start + n)]


async def test_inserts_updates_and_late_rows_keep_rollups_exact(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    first = spread(300)
    # some rows arrive as failures first (a failed attempt), then are upserted as successes below
    failed = {r["id"] for r in first if int(r["id"][1:]) % 5 == 0}
    await store.insert_rows(conn, [{**r, "status": "failure", "credits_charged": 0, "provider": "deepinfra",
                                    "latency_ms": 9000} if r["id"] in failed else r for r in first])
    await check_everything(conn)

    # failure -> success: the writer's upsert replaces the row; the rollups must move it, not add it
    before = (await store.dashboard(conn, store.UsageFilter(), "day", True))["totals"]
    await store.insert_rows(conn, [r for r in first if r["id"] in failed])
    after = (await store.dashboard(conn, store.UsageFilter(), "day", True))["totals"]
    assert after["requests"] == before["requests"] == 300
    assert after["succeeded"] == before["succeeded"] + len(failed)
    assert await conn.fetchval("SELECT count(*) FROM usage_log WHERE status = 'failure'") == 0
    # a success is never overwritten (the upsert's WHERE): no trigger effect either
    await store.insert_rows(conn, [{**r, "status": "failure", "credits_charged": 5} for r in first[:20]])
    await check_everything(conn)

    # late rows: a spool replay hours/days later lands in the row's own hour and day
    late = [row(1000 + i, NOW - timedelta(days=i % 20, hours=i % 24, minutes=13)) for i in range(60)]
    await store.insert_rows(conn, late)
    await check_everything(conn)

    # a delete (an operator pruning the log) subtracts too
    await conn.execute("DELETE FROM usage_log WHERE id = ANY($1::text[])", [f"r{i}" for i in range(0, 300, 7)])
    await check_everything(conn)

    # an account's own dashboard equals its rows
    mine = await assert_dashboard_equals_raw(conn, store.UsageFilter(account="user:u2"), "hour")
    n = await conn.fetchval("SELECT count(*) FROM usage_log WHERE account = 'user:u2'")
    assert mine["totals"]["requests"] == n > 0 and sum(p["requests"] for p in mine["series"]) == n


async def test_a_filter_the_rollups_cannot_express_reads_the_raw_rows(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    await store.insert_rows(conn, spread(60))
    # power_level '' is the rollups' stand-in for NULL: it must not match the NULL-level rows
    flt = store.UsageFilter(power_level="")
    assert not store.rollup_can_answer(flt)
    assert (await store.dashboard(conn, flt, "day", True))["totals"]["requests"] == 0
    assert (await store.dashboard(conn, store.UsageFilter(), "day", True))["totals"]["requests"] == 60


async def test_migration_backfills_existing_rows(database: str) -> None:
    shipped = load_migrations()
    before = [m for m in shipped if m.name < ROLLUP]
    assert [m.name for m in shipped if m.name >= ROLLUP][0] == ROLLUP
    conn = await connect(database)
    try:
        await migrate(conn, before)
        assert await conn.fetchval("SELECT to_regclass('litellm_plugins.usage_rollup_hour')") is None
        rows = spread(250)
        older = tuple(c for c in store.COLUMNS if c not in ("tier", "billing_customer"))  # before 20261201002100
        await store.insert_rows(conn, [{**r, "status": "failure"} if int(r["id"][1:]) % 4 == 0 else r for r in rows],
                                older)
        await migrate(conn)  # the rollup migration (and any later one) on a log with rows in it
        assert await conn.fetchval("SELECT sum(requests) FROM usage_rollup_hour") == 250
        await check_everything(conn)
        # and the triggers keep it from there on (failure -> success of backfilled rows)
        await store.insert_rows(conn, [r for r in rows if int(r["id"][1:]) % 4 == 0])
        await check_everything(conn)
    finally:
        await conn.close()


async def test_latency_buckets_match_the_sql_function(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    probes = sorted({0, 1, 4} | {b + d for b in store.LATENCY_BOUNDS for d in (-1, 0, 1)} | {10**7})
    got = await conn.fetch("SELECT ms, usage_latency_bucket(ms) AS b FROM unnest($1::int[]) AS ms", probes)
    for r in got:
        expected = sum(1 for bound in store.LATENCY_BOUNDS if r["ms"] >= bound)
        assert r["b"] == expected, dict(r)
    assert store.N_LATENCY == 49
    assert store.hist_p50([0] * 49) is None
    assert store.hist_p50([0, 2, 1] + [0] * 46) == store.latency_bucket_value(1)
    assert store.hist_p50([0, 1, 1] + [0] * 46) == store.latency_bucket_value(1)  # percentile_disc: lower
    # every value is within 12% of its bucket's representative (from 5 ms up to the last bound)
    for b in range(1, len(store.LATENCY_BOUNDS)):
        lo, hi, mid = store.LATENCY_BOUNDS[b - 1], store.LATENCY_BOUNDS[b] - 1, store.latency_bucket_value(b)
        assert abs(mid - lo) <= 0.12 * lo + 1 and abs(hi - mid) <= 0.12 * hi + 1, b
