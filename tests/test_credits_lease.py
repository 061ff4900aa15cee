"""Leases (credits/lease.py) against a real Redis and Postgres: holds carved without an await, the
invariant ``held == sum of the holds hash`` at every step, no overspend across two workers, leases
given back before they can refuse another worker's request, lost leases (flushed Redis, a dead
worker, a new connection) never used."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from litellm_plugins.core.errors import SettingsError
from litellm_plugins.core.runtime import Runtime
from litellm_plugins.core.settings import parse_settings
from litellm_plugins.credits.engine import Engine
from tests.test_credits_unit import auth, engine, rows, success_kwargs  # noqa: F401 - fixture

BIG = 1000 * 1_000_000  # the starting grant, in units


def request(user: str = "lessee") -> dict:
    return {"model": "cheap", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10,
            "litellm_call_id": f"call-{uuid.uuid4().hex[:8]}"}


async def hold(eng: Engine, user: str) -> tuple[dict, dict]:
    data = request(user)
    await eng.pre_call(auth(user), data, "acompletion")
    return data, data["metadata"]["litellm_plugins"]


def hold_without_awaiting(eng: Engine, user: str) -> tuple[dict, dict]:
    """Run pre_call to completion in one step: StopIteration proves it never waited for anything."""
    data = request(user)
    coro = eng.pre_call(auth(user), data, "acompletion")
    with pytest.raises(StopIteration):
        coro.send(None)
    return data, data["metadata"]["litellm_plugins"]


async def redis_state(eng: Engine, account: str) -> tuple[int, int, dict[str, int]]:
    """(balance, held, holds hash as id -> amount) once every sent command has been answered."""
    await eng.cache.sender.request("PING")  # FIFO: the carves sent before it are done
    acct = await eng.cache.redis.hgetall(eng.cache.acct_key(account))
    entries = await eng.cache.redis.hgetall(eng.cache.holds_key(account))
    holds = {k.decode(): int(v.decode().split(":")[0]) for k, v in entries.items()}
    return int(acct[b"balance"]), int(acct[b"held"]), holds


async def assert_consistent(eng: Engine, account: str) -> tuple[int, int, dict[str, int]]:
    balance, held, holds = await redis_state(eng, account)
    assert held == sum(holds.values()), (held, holds)
    assert balance - held >= 0
    return balance, held, holds


def lease_of(holds: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in holds.items() if k.startswith("lease:")}


async def test_settings_name_the_bad_lease_key():
    base = {"database_url": "x", "redis_url": "y"}
    for key, value in [("lease_requests", -1), ("lease_seconds", 0), ("lease_headroom", 0)]:
        with pytest.raises(SettingsError, match=rf"litellm_plugins.credits.{key}"):
            parse_settings({**base, "credits": {key: value}})
    assert parse_settings(base).credits.lease_requests == 8


async def test_a_served_account_gets_a_lease_and_later_holds_do_not_wait(engine):
    assert await engine.cache.sender.connect()
    try:
        _, first = await hold(engine, "lessee")  # first sight of the account: exact, no lease asked
        amount = first["hold"]["amount"]
        assert amount > 0 and not lease_of((await assert_consistent(engine, "user:lessee"))[2])
        _, second = await hold(engine, "lessee")  # served again within lease_seconds: exact + lease
        _, held, holds = await assert_consistent(engine, "user:lessee")
        assert list(lease_of(holds).values()) == [8 * amount] and held == 2 * amount + 8 * amount
        carved = [hold_without_awaiting(engine, "lessee") for _ in range(8)]
        assert engine.leases.stats["carved"] == 8
        balance, held, holds = await assert_consistent(engine, "user:lessee")
        assert held == 10 * amount and list(lease_of(holds).values()) == [0]
        for _, ctx in carved:  # each carved hold is an entry of its own, as an exact one is
            assert holds[ctx["hold"]["id"]] == amount and ctx["hold"]["balance"] == balance
        # the lease is used up: the next hold is exact again, gives the old lease back and takes a new one
        _, ctx = await hold(engine, "lessee")
        _, held, holds = await assert_consistent(engine, "user:lessee")
        assert len(lease_of(holds)) == 1 and list(lease_of(holds).values()) == [8 * amount]
        assert held == 11 * amount + 8 * amount
        # every hold also went to the writer: Postgres gets one hold row per request
        assert sum(1 for r in engine.writer.queue if r["op"] == "hold") == 11
    finally:
        await engine.cache.sender.close()


async def test_settled_carved_holds_and_an_idle_lease_leave_nothing_held(engine):
    assert await engine.cache.sender.connect()
    try:
        placed = [await hold(engine, "settler") for _ in range(2)] + \
            [hold_without_awaiting(engine, "settler") for _ in range(3)]
        assert engine.leases.stats["carved"] == 3
        for data, _ in placed:
            await engine.record_success(success_kwargs(data, 0.000001))
        await engine.writer.flush()
        engine.leases.maintain()  # used since the last tick: kept
        assert "user:settler" in engine.leases.by_account
        engine.leases.maintain()  # a tick unused: given back
        assert "user:settler" not in engine.leases.by_account
        balance, held, holds = await assert_consistent(engine, "user:settler")
        assert held == 0 and holds == {} and balance == BIG - 5 * 100
        settles = await rows(engine, "SELECT delta FROM credit_ledger WHERE kind = 'settle'")
        assert sorted(r["delta"] for r in settles) == [-100] * 5
    finally:
        await engine.cache.sender.close()


async def test_no_lease_without_headroom_and_never_overspent_by_two_workers(engine, database):
    """Two engines (two workers) on one account whose balance covers 30 holds: leases are granted
    only while the account keeps 10x their size free, and 2 x 40 holds in parallel let exactly 30
    through with the balance never below the held total."""
    second = Engine(Runtime(settings=engine.rt.settings, config=engine.rt.config, pool=engine.rt.pool,
                            redis=engine.rt.redis))
    engines = (engine, second)
    for eng in engines:
        assert await eng.cache.sender.connect()
    try:
        _, probe = await hold(engine, "probe")
        amount = probe["hold"]["amount"]
        async with engine.rt.pool.acquire() as conn:
            await conn.execute("SET search_path TO litellm_plugins")
            await conn.execute("INSERT INTO credit_accounts (account, balance, version) VALUES ('user:tight', $1, 1)",
                               30 * amount)
            await conn.execute("INSERT INTO credit_ledger (account, kind, delta, amount) "
                               "VALUES ('user:tight', 'grant', $1, $1)", 30 * amount)

        async def one(eng: Engine) -> bool:
            try:
                await hold(eng, "tight")
                return True
            except Exception as exc:  # noqa: BLE001
                assert "Insufficient credits" in str(getattr(exc, "message", exc))
                return False

        results = await asyncio.gather(*(one(engines[i % 2]) for i in range(80)))
        assert sum(results) == 30
        balance, held, holds = await assert_consistent(engine, "user:tight")
        assert balance == 30 * amount and held == 30 * amount and not lease_of(holds)
        # a rich account does get leases, and the same invariant holds under parallel load
        for _ in range(2):
            await asyncio.gather(*(hold(engines[i % 2], "rich") for i in range(40)))
        for eng in engines:
            await eng.cache.sender.request("PING")
        balance, held, holds = await assert_consistent(engine, "user:rich")
        assert engine.leases.stats["carved"] + second.leases.stats["carved"] > 0
        assert held == 80 * amount + sum(lease_of(holds).values())
    finally:
        for eng in engines:
            await eng.cache.sender.close()


async def test_a_lease_is_given_back_before_it_refuses_another_workers_request(engine):
    """Worker A holds a lease; worker B spends the account down until its free money is below the
    lease's size; A's next carve sees it and gives the lease back, so B is not refused while
    A's lease sits unused."""
    other = Engine(Runtime(settings=engine.rt.settings, config=engine.rt.config, pool=engine.rt.pool,
                           redis=engine.rt.redis))
    for eng in (engine, other):
        assert await eng.cache.sender.connect()
    try:
        await hold(engine, "shared")
        _, ctx = await hold(engine, "shared")
        amount = ctx["hold"]["amount"]
        lease = engine.leases.by_account["user:shared"]
        assert lease.size == 8 * amount
        balance, held, _ = await assert_consistent(engine, "user:shared")
        # B takes (without leases of its own) all but half a lease of the free balance
        big = balance - held - lease.size // 2
        assert (await other.cache.hold("user:shared", "b-big", big))[0] == 1
        hold_without_awaiting(engine, "shared")  # A carves; the answer shows free < lease size
        balance, held, holds = await assert_consistent(engine, "user:shared")
        assert "user:shared" not in engine.leases.by_account and not lease_of(holds)
        assert balance - held >= lease.size - amount  # what the lease set aside is free again
        _, ctx_b = await hold(other, "shared")
        assert ctx_b["hold"]["amount"] == amount
    finally:
        for eng in (engine, other):
            await eng.cache.sender.close()


async def test_a_flushed_lease_is_noticed_and_the_rebuild_counts_the_carved_hold(engine):
    assert await engine.cache.sender.connect()
    try:
        first = [await hold(engine, "flushed") for _ in range(2)]
        await engine.writer.flush()  # both hold rows in Postgres
        redis = engine.cache.redis
        await redis.delete(engine.cache.acct_key("user:flushed"), engine.cache.holds_key("user:flushed"))
        _, carved = hold_without_awaiting(engine, "flushed")  # the lease is gone: placed unchecked
        await engine.cache.sender.request("PING")
        assert engine.leases.stats["lost"] == 1 and "user:flushed" not in engine.leases.by_account
        _, after = await hold(engine, "flushed")  # exact: rebuilds the account from Postgres
        balance, held, holds = await assert_consistent(engine, "user:flushed")
        wanted = {ctx["hold"]["id"] for _, ctx in first} | {carved["hold"]["id"], after["hold"]["id"]}
        assert wanted <= set(holds) and balance == BIG
        assert held == 4 * after["hold"]["amount"] + sum(lease_of(holds).values())
    finally:
        await engine.cache.sender.close()


async def test_a_dead_workers_lease_is_released_by_the_reconciler_and_a_new_connection_drops_leases(engine):
    assert await engine.cache.sender.connect()
    try:
        for _ in range(2):
            _, ctx = await hold(engine, "dead")
        amount = ctx["hold"]["amount"]
        lease = engine.leases.by_account["user:dead"]
        # a new connection (Redis restarted, or a blip): the lease is not used on it
        await engine.cache.sender.close()
        engine.cache.sender._closed = False
        assert await engine.cache.sender.connect()
        _, ctx = await hold(engine, "dead")  # exact (gives the old lease back, takes a new one)
        assert engine.leases.stats["carved"] == 0 and engine.leases.by_account["user:dead"] is not lease
        # the worker dies (its lease is forgotten here) and the lease entry ages past lease_seconds + 30 s
        field = engine.leases.by_account.pop("user:dead").field
        key = engine.cache.holds_key("user:dead")
        stale = int(time.time()) - int(engine.settings.lease_seconds) - 31
        await engine.cache.redis.hset(key, field, f"{8 * amount}:{stale}")
        report = await engine.reconcile_once()
        assert report["leases"] == 1
        _, held, holds = await assert_consistent(engine, "user:dead")
        assert not lease_of(holds) and held == 3 * amount
    finally:
        await engine.cache.sender.close()


async def test_a_lease_given_back_while_the_send_only_connection_is_down_goes_through_redis_py(engine):
    assert await engine.cache.sender.connect()
    for _ in range(2):
        _, ctx = await hold(engine, "offline")
    amount = ctx["hold"]["amount"]
    _, held, holds = await assert_consistent(engine, "user:offline")
    assert list(lease_of(holds).values()) == [8 * amount] and held == 10 * amount
    await engine.cache.sender.close()
    engine.leases.maintain()  # granted since the last tick: kept
    engine.leases.maintain()  # unused for a tick: given back, but the connection is down
    assert "user:offline" not in engine.leases.by_account and len(engine.leases._unsent) == 1
    await engine.leases._release_unsent()  # the next tick, through redis-py
    entries = await engine.cache.redis.hgetall(engine.cache.holds_key("user:offline"))
    acct = await engine.cache.redis.hgetall(engine.cache.acct_key("user:offline"))
    assert not [k for k in entries if k.startswith(b"lease:")] and int(acct[b"held"]) == 2 * amount
    assert engine.leases._unsent == []


async def test_a_lease_granted_just_before_a_tick_survives_it_and_ticks_follow_lease_seconds(engine):
    """A tick right after the grant (the proxy's next request has not come yet) must not take the
    lease back: it counts as used until a whole tick has passed without a carve."""
    assert await engine.cache.sender.connect()
    try:
        for _ in range(2):
            await hold(engine, "ticked")
        engine.leases.maintain()  # the tick right after the grant
        assert "user:ticked" in engine.leases.by_account
        hold_without_awaiting(engine, "ticked")  # so the next request still carves
        assert engine.leases.stats["carved"] == 1
        assert engine.leases.tick_seconds == engine.settings.lease_seconds / 5
    finally:
        await engine.cache.sender.close()


async def test_carve_and_give_back_survive_a_redis_that_forgot_the_scripts(engine):
    """SCRIPT FLUSH (as after a Redis restart): the send-only EVALSHA answers NOSCRIPT and
    ``SendOnlyRedis.send_script`` re-sends the script itself; the carve and the give-back still land."""
    assert await engine.cache.sender.connect()
    try:
        for _ in range(2):
            _, ctx = await hold(engine, "forgetful")
        amount = ctx["hold"]["amount"]
        await engine.cache.redis.script_flush()
        _, carved = hold_without_awaiting(engine, "forgetful")
        _, held, holds = await assert_consistent(engine, "user:forgetful")
        assert holds[carved["hold"]["id"]] == amount and list(lease_of(holds).values()) == [7 * amount]
        assert engine.leases.stats["lost"] == 0 and held == 3 * amount + 7 * amount
        await engine.cache.redis.script_flush()
        engine.leases.maintain()
        engine.leases.maintain()  # a whole tick unused: given back through the send-only connection
        _, held, holds = await assert_consistent(engine, "user:forgetful")
        assert not lease_of(holds) and held == 3 * amount
    finally:
        await engine.cache.sender.close()
