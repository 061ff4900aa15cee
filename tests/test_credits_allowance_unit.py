"""Allowances below the proxy: the calendar, settings, and the SQL functions against real Postgres
(the Postgres path's caps and unlimited check, late periods, bucket expiry, what `verify` catches).
The whole flow through real proxies is tests/test_credits_allowances.py."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import asyncpg
import pytest
import redis.asyncio as aioredis

from litellm_plugins.core.db import create_pool
from litellm_plugins.core.errors import SettingsError
from litellm_plugins.core.migrator import migrate
from litellm_plugins.core.settings import parse_settings
from litellm_plugins.credits import store
from litellm_plugins.credits.allowance import Allowances, Calendar
from litellm_plugins.credits.cache import CreditCache
from litellm_plugins.credits.policies.postgres import PLACED, PostgresHolds
from litellm_plugins.credits.settings import CreditsSettings

UTC = dt.UTC


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_calendar_periods_in_the_configured_zone() -> None:
    utc, paris = Calendar("UTC"), Calendar("Europe/Paris")
    # 2027-03-31 23:30 UTC is already April 1st in Paris (UTC+2 from March 28)
    t = ts("2027-03-31T23:30:00+00:00")
    assert utc.period("month", t).key == "2027-03-01/month"
    assert paris.period("month", t).key == "2027-04-01/month"
    assert paris.period("month", t).resets_at == "2027-04-30T22:00:00Z"
    assert utc.period("day", t).resets_at == "2027-04-01T00:00:00Z"
    # ISO weeks start on Monday; December rolls over the year
    assert utc.period("week", ts("2027-01-03T12:00:00+00:00")).key == "2026-12-28/week"
    assert utc.period("month", ts("2026-12-15T00:00:00+00:00")).resets_at == "2027-01-01T00:00:00Z"
    # a DST change inside the period: the end is local midnight, not start + 24 h
    spring = paris.period("day", ts("2027-03-28T12:00:00+02:00"))
    assert spring.end - spring.start == 23 * 3600
    assert utc.spend_keys(t) == ("2027-03-31", "2027-03-29", "2027-03-01")


def test_allowance_settings_are_checked_and_name_the_bad_key() -> None:
    base = {"database_url": "x", "redis_url": "y"}
    good = parse_settings({**base, "credits": {"allowances": {"free": {"amount": 0.5, "period": "week"},
                                                              "vip": {"amount": "unlimited", "period": "month"}},
                                               "caps": {"free": {"day": 10}}, "timezone": "Asia/Tokyo"}})
    rules = Allowances(good.credits)
    assert rules.of("free").allowance == 500_000 and rules.of("vip").allowance == -1
    assert rules.of("free").caps == (10_000_000, None, None)
    assert rules.of("nobody") is None and rules.ensure_args("nobody") is None
    for bad, named in [({"timezone": "Mars/Olympus"}, "credits.timezone"),
                       ({"allowances": {"free": {"amount": 10, "period": "year"}}}, "credits.allowances.free.period"),
                       ({"allowances": {"free": {"amount": -1, "period": "day"}}}, "credits.allowances.free.amount"),
                       ({"allowances": {"free": {"amount": 10}}}, "credits.allowances.free.period"),
                       ({"caps": {"free": {"hour": 1}}}, "credits.caps.free.hour"),
                       ({"caps": {"free": {"day": -3}}}, "credits.caps.free.day"),
                       ({"caps": {"free": {"week": "0.0000001"}}}, "credits.caps.free.week"),
                       ({"allowances": {"free": {"amount": 1.0000001, "period": "day"}}}, "credits.allowances.free.amount")]:
        with pytest.raises(SettingsError, match=named.replace(".", r"\.")):
            parse_settings({**base, "credits": bad})


def test_hold_args_carry_period_counters_and_caps() -> None:
    rules = Allowances(CreditsSettings(allowances={"free": {"amount": 3, "period": "day"}},
                                       caps={"capped": {"week": 2}}))
    now = time.time()
    day = rules.calendar.period("day", now)
    args = rules.hold_args("free")
    assert args[:2] == [day.key, 3_000_000] and args[5:] == ["", "", ""]
    assert rules.hold_args("capped")[:2] == ["", 0] and rules.hold_args("capped")[5:] == ["", 2_000_000, ""]
    assert rules.hold_args("other") == ["", 0, *rules.calendar.spend_keys(), "", "", ""]


@pytest.fixture
async def db(database):
    conn = await asyncpg.connect(database, server_settings={"search_path": "litellm_plugins"})
    await migrate(conn)
    try:
        yield conn
    finally:
        await conn.close()


async def ensure(conn, account, tier, period, amount, expires="2099-01-01T00:00:00+00:00", starting=1000):
    return await conn.fetchval("SELECT credits_ensure_allowance($1, $2, $3, $4, $5::timestamptz, $6)",
                               account, tier, period, amount, dt.datetime.fromisoformat(expires), starting)


async def test_ensure_allowance_rules(db) -> None:
    acct = "user:rules"
    assert await ensure(db, acct, "free", "2027-03-01/month", 300, "2027-04-01T00:00:00+00:00")
    assert not await ensure(db, acct, "free", "2027-03-01/month", 300)  # again: nothing
    assert not await ensure(db, acct, "free", "2027-03-01/month", 100)  # downgrade: nothing
    assert await ensure(db, acct, "pro", "2027-03-01/month", 500)  # upgrade: +200
    assert not await ensure(db, acct, "pro", "2027-03-01/month", 500)
    assert await ensure(db, acct, "free", "2027-04-01/month", 300, "2027-05-01T00:00:00+00:00")  # next: 500 expire
    # a late record of an earlier period that already has its bucket: nothing
    assert not await ensure(db, acct, "free", "2027-03-01/month", 300)
    # an earlier period never granted (a late call of it): granted once, the open period unchanged
    assert await ensure(db, acct, "free", "2027-02-01/month", 300, "2027-03-01T00:00:00+00:00")
    assert not await ensure(db, acct, "free", "2027-02-01/month", 300)
    got = await db.fetch("SELECT kind, delta, idempotency_key FROM credit_ledger WHERE account = $1 ORDER BY id", acct)
    assert [(r["kind"], r["delta"], r["idempotency_key"]) for r in got] == [
        ("grant", 1000, f"starting-grant:{acct}"),
        ("allowance", 300, f"allowance:{acct}:2027-03-01/month"),
        ("allowance", 200, f"allowance:{acct}:2027-03-01/month:500"),
        ("allowance_expire", -500, f"allowance-expire:{acct}:2027-03-01/month"),
        ("allowance", 300, f"allowance:{acct}:2027-04-01/month"),
        ("allowance", 300, f"allowance:{acct}:2027-02-01/month")]
    row = (await db.fetch("SELECT balance, allowance_period, tier FROM credit_accounts WHERE account = $1", acct))[0]
    assert (row["balance"], row["allowance_period"], row["tier"]) == (1600, "2027-04-01/month", "free")
    # the sweep's expiry: February's late bucket is past, March's is empty; April's is open
    expired = await db.fetch("SELECT * FROM credits_expire_buckets($1, 100)", ts("2027-04-15T00:00:00+00:00"))
    assert [r["out_account"] for r in expired] == [acct]
    assert (await db.fetchval("SELECT balance FROM credit_accounts WHERE account = $1", acct)) == 1300
    assert await store.verify(db) == []


async def test_postgres_path_applies_the_allowance_and_checks_caps_and_unlimited(database, db) -> None:
    pool = await create_pool(database, 1, 4)
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    try:
        pg = PostgresHolds(pool, CreditCache(dead, f"lp_test_{uuid.uuid4().hex[:8]}:"), starting_units=100,
                           writer_interval=0.0)
        pg.grace = 0.0
        await pg.enter()
        now = time.time()
        alw = ("2027-03-01/month", 50, ts("2027-04-01T00:00:00+00:00"))
        keys = ["2027-03-10/month", 50, "2027-03-10", "2027-03-08", "2027-03-01"]
        # 100 paid + 50 allowance: 150 available, no cap
        assert (await pg.hold("h1", "c1", "user:pgalw", 140, now, 0, "free", alw, [*keys, "", "", ""]))[0] == PLACED
        assert (await pg.hold("h2", "c2", "user:pgalw", 20, now, 0, "free", alw, [*keys, "", "", ""]))[0] == 0
        # a weekly cap of 150: 140 held + 5 fits, + 15 more does not -> status 2, cap index 2 (week)
        status, _, _, _, cap_index, cap = await pg.hold("h3", "c3", "user:pgalw", 5, now, 0, "free", alw,
                                                        [*keys, "", 150, ""])
        assert (status, cap_index, cap) == (PLACED, 0, 0)
        status, _, _, _, cap_index, cap = await pg.hold("h4", "c4", "user:pgalw", 15, now, 0, "free", alw,
                                                        [*keys, "", 150, ""])
        assert (status, cap_index, cap) == (2, 2, 150)
        # unlimited: no balance check, caps still apply
        unl = ("2027-03-01/month", -1, ts("2027-04-01T00:00:00+00:00"))
        assert (await pg.hold("h5", "c5", "user:pgunl", 10_000, now, 0, "vip", unl, [*keys, "", "", ""]))[0] == PLACED
        assert (await pg.hold("h6", "c6", "user:pgunl", 10, now, 0, "vip", unl, [*keys, 10_005, "", ""]))[:1] == (2,)
        assert await store.verify(db) == []
    finally:
        await pool.close()
        await dead.aclose()


async def test_verify_names_a_bucket_that_disagrees_with_its_ledger(db) -> None:
    acct = "user:tamper"
    await ensure(db, acct, "free", "2027-03-01/month", 300)
    await db.execute("UPDATE credit_buckets SET remaining = remaining - 1 WHERE account = $1", acct)
    await db.execute("UPDATE credit_accounts SET balance = balance - 1 WHERE account = $1", acct)
    problems = await store.verify(db)
    assert any("bucket" in p and acct in p and "299" in p for p in problems), problems
    # a settle whose delta does not match its split
    await db.execute("INSERT INTO credit_ledger (account, kind, delta, amount, hold_id, split) "
                     "VALUES ($1, 'settle', -10, 10, 'h-x', $2::jsonb)", acct, json.dumps({"unlimited": 10}))
    assert any("settle" in p and "unlimited 10" in p for p in await store.verify(db))


async def test_proxies_not_yet_upgraded_keep_working_after_the_migration(db) -> None:
    """A rolling deploy: the old functions stay, and what they write is paid credits that verify."""
    now = time.time()
    rows = await db.fetch("SELECT * FROM credits_apply_batch($1::text[], $2::text[], $3::text[], $4::bigint[], "
                          "$5::float8[], $6::text[], $7::bigint[], $8::text[], $9::bigint)",
                          ["old-h1"], ["old-c1"], ["user:old"], [50], [now], ["old-h1"], [40], [], 1000)
    assert [(r["out_account"], r["out_balance"]) for r in rows] == [("user:old", 960)]
    got = await db.fetch("SELECT * FROM credits_open_accounts($1::text[], $2, false)", ["user:old2"], 1000)
    assert got[0]["out_balance"] == 1000
    assert await store.verify(db) == []
    # and the new code reads them as paid balances (no bucket row)
    acct = await store.balance(db, "user:old")
    assert acct["balance"] == 960 and await store.buckets(db, "user:old", now) == []


async def test_leases_on_a_capped_account_never_let_holds_pass_the_cap(database, tmp_path) -> None:
    """A carve from a lease checks no cap; so a lease is granted only with the same headroom under every
    cap as under the balance (cache.HOLD). Holds placed until the cap refuses: leases were used, and
    everything held together stays within the cap."""
    from litellm.proxy._types import ProxyException, UserAPIKeyAuth

    from tests.test_credits_unit import engine_with

    who = UserAPIKeyAuth(api_key="hashed", token="hashed", user_id="capped-lessee")

    def request() -> dict:
        return {"model": "cheap", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10,
                "litellm_call_id": f"call-{uuid.uuid4().hex[:8]}"}

    async with engine_with(database, tmp_path, lease_headroom=1) as eng:
        pool, redis = eng.rt.pool, eng.rt.redis
        assert await eng.cache.sender.connect()
        first = request()
        await eng.pre_call(who, first, "acompletion")
        size = first["metadata"]["litellm_plugins"]["hold"]["amount"]
        cap = 30 * size
        async with pool.acquire() as c:
            await c.execute("SET search_path TO litellm_plugins")
            assert await store.set_caps(c, "user:capped-lessee", {"day": cap})
            state = await store.redis_state(c, "user:capped-lessee")
        await eng.cache.release("user:capped-lessee", "", state[0], state[1], state=state[2])
        placed, refused = 1, None
        for _ in range(100):
            try:
                await eng.pre_call(who, request(), "acompletion")
                placed += 1
            except ProxyException as exc:
                refused = exc
                break
        await eng.cache.sender.request("PING")  # every carve answered
        entries = await redis.hgetall(eng.cache.holds_key("user:capped-lessee"))
        holds = sum(int(v.decode().split(":")[0]) for k, v in entries.items() if not k.startswith(b"lease:"))
        assert refused is not None and refused.type == "spend_cap_reached"
        assert eng.leases.stats["carved"] > 0
        assert holds == placed * size <= cap < (placed + 1) * size + sum(
            int(v.decode().split(":")[0]) for k, v in entries.items() if k.startswith(b"lease:"))
        await eng.leases.close()
        await eng.cache.sender.close()
