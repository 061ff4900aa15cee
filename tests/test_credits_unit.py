"""Credits pieces in process against a real Postgres and Redis: exact money, duplicate callbacks,
the reconciler, the spool, pricing. (End-to-end behaviour is in test_credits_e2e / _outage.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from decimal import Decimal

import asyncpg
import pytest
import redis.asyncio as aioredis
from litellm.proxy._types import UserAPIKeyAuth
from redis.exceptions import ConnectionError as RedisConnectionError

from litellm_plugins.core import runtime
from litellm_plugins.core.context import RequestContext
from litellm_plugins.core.db import create_pool
from litellm_plugins.core.errors import SettingsError
from litellm_plugins.core.migrator import migrate
from litellm_plugins.core.settings import parse_settings
from litellm_plugins.credits import hook as hook_module
from litellm_plugins.credits import public, store
from litellm_plugins.credits.cache import CreditCache
from litellm_plugins.credits.engine import Engine
from litellm_plugins.credits.money import charge_units, credits_to_units, fmt, hold_units, to_decimal
from litellm_plugins.credits.policies.postgres import NOT_POSTGRES, PLACED, TOO_EARLY, PostgresHolds
from litellm_plugins.credits.pricing import build_price_table, estimate_prompt_tokens, worst_case_usd
from litellm_plugins.credits.spool import Spool
from tests.support.services import REDIS_URL

MODEL_LIST = [
    {"model_name": "cheap", "litellm_params": {"model": "openai/cheap", "input_cost_per_token": 0.000001,
                                               "output_cost_per_token": 0.000002},
     "model_info": {"max_output_tokens": 100}},
    {"model_name": "cheap", "litellm_params": {"model": "openai/cheap-b", "input_cost_per_token": 0.000003,
                                               "output_cost_per_token": 0.000001}},
]


def test_charge_rounds_half_up_and_hold_rounds_up():
    rate, one = Decimal(100), Decimal(1)
    # 0.0000000125 USD * 100 = 0.00000125 credits = 1.25 units -> 1 ; 1.5 units -> 2 ; 2.5 -> 3
    assert charge_units(Decimal("0.0000000125"), rate, one) == 1
    assert charge_units(Decimal("0.000000015"), rate, one) == 2
    assert charge_units(Decimal("0.000000025"), rate, one) == 3
    assert hold_units(Decimal("0.0000000101"), rate, one) == 2
    assert charge_units(Decimal("0.001"), rate, Decimal("1.5")) == 150_000
    assert charge_units(Decimal(0), rate, one) == 0 and charge_units(Decimal("-1"), rate, one) == 0
    # LiteLLM's float cost goes through repr, so 5.25e-06 is exactly 5.25e-06 here
    assert to_decimal(3 * 1.5e-07 + 8 * 6e-07) == Decimal("5.25e-06")
    assert charge_units(to_decimal(5.25e-06), rate, one) == 525
    assert fmt(12_345_678) == "12.345678" and fmt(-5) == "-0.000005" and fmt(0) == "0.000000"
    assert credits_to_units(Decimal("12.5")) == 12_500_000
    with pytest.raises(ValueError):
        credits_to_units(Decimal("0.0000001"))


def test_price_table_takes_the_most_expensive_deployment_and_worst_case():
    table = build_price_table(MODEL_LIST)
    price = table["cheap"]
    assert price.input_per_token == Decimal("0.000003") and price.output_per_token == Decimal("0.000002")
    assert price.max_output_tokens == 100
    data = {"messages": [{"role": "user", "content": "x" * 30}]}
    assert estimate_prompt_tokens(data, 3.0) == 10 + 4 + 8
    assert worst_case_usd(price, data, 3.0, 4096) == 22 * Decimal("0.000003") + 100 * Decimal("0.000002")
    assert worst_case_usd(price, {**data, "max_tokens": 7}, 3.0, 4096) == 22 * Decimal("0.000003") + 7 * Decimal("0.000002")
    assert worst_case_usd(None, data, 3.0, 4096) == 0


def test_settings_are_exact_and_strict():
    s = parse_settings({"database_url": "x", "redis_url": "y",
                        "credits": {"enabled": True, "credits_per_usd": 0.1, "tier_markup": {"pro": 1.1}}})
    assert s.credits.credits_per_usd == Decimal("0.1") and s.credits.markup("pro") == Decimal("1.1")
    assert s.credits.markup("unknown") == Decimal(1)
    with pytest.raises(SettingsError, match=r"litellm_plugins.credits.starting_grnt: unknown setting"):
        parse_settings({"database_url": "x", "redis_url": "y", "credits": {"starting_grnt": 5}})
    with pytest.raises(SettingsError, match=r"litellm_plugins.credits.tier_markup"):
        parse_settings({"database_url": "x", "redis_url": "y", "credits": {"tier_markup": {"pro": -1}}})


@pytest.fixture
async def engine(database, tmp_path):
    async with engine_with(database, tmp_path, hold_ttl_seconds=60) as eng:
        yield eng


@contextlib.asynccontextmanager
async def engine_with(database: str, tmp_path, **credits):
    """A credits ``Engine`` on a migrated throwaway database and its own Redis prefix, installed as the
    runtime's (``credits`` settings on top of enabled + a spool under ``tmp_path``)."""
    conn = await asyncpg.connect(database)
    await migrate(conn)
    await conn.close()
    pool = await create_pool(database, 1, 4)
    redis = aioredis.Redis.from_url(REDIS_URL)
    prefix = f"lp_test_{uuid.uuid4().hex[:8]}:"
    settings = parse_settings({"database_url": database, "redis_url": REDIS_URL, "redis_key_prefix": prefix,
                               "credits": {"enabled": True, "spool_dir": str(tmp_path / "spool"), **credits}})
    rt = runtime.Runtime(settings=settings, config={"model_list": MODEL_LIST}, pool=pool, redis=redis)
    eng = Engine(rt)
    runtime.install(rt)
    hook_module._engine = eng
    try:
        yield eng
    finally:
        runtime.install(None)
        hook_module._engine = None
        keys = [k async for k in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await pool.close()


def auth(user: str) -> UserAPIKeyAuth:
    return UserAPIKeyAuth(api_key="hashed", token="hashed", user_id=user)


async def place(eng: Engine, user: str, **extra) -> tuple[dict, dict]:
    data = {"model": "cheap", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10,
            "litellm_call_id": f"call-{uuid.uuid4().hex[:6]}", **extra}
    await eng.pre_call(auth(user), data, "acompletion")
    return data, data["metadata"]["litellm_plugins"]


def success_kwargs(data: dict, cost: float) -> dict:
    return {"litellm_call_id": data["litellm_call_id"], "response_cost": cost,
            "litellm_params": {"metadata": data["metadata"]},
            "standard_logging_object": {"response_cost": cost, "prompt_tokens": 3, "completion_tokens": 5,
                                        "model_group": "cheap", "model_id": "dep-1", "custom_llm_provider": "openai",
                                        "startTime": time.time() - 0.1, "endTime": time.time(), "stream": False,
                                        "metadata": {"user_api_key_user_id": "dup"}}}


async def rows(eng: Engine, sql: str, *args):
    async with eng.rt.pool.acquire() as conn:
        return await conn.fetch(sql, *args)


async def test_duplicate_success_callbacks_charge_once(engine):
    data, ctx = await place(engine, "dup")
    kwargs = success_kwargs(data, 0.0000123)
    hook = hook_module.credits_hook
    await hook.async_log_success_event(kwargs, None, None, None)
    await hook.async_log_success_event(kwargs, None, None, None)  # same batch
    await engine.writer.flush()
    await hook.async_log_success_event(kwargs, None, None, None)  # a later batch
    await engine.writer.flush()
    settles = await rows(engine, "SELECT delta FROM credit_ledger WHERE kind = 'settle'")
    assert [r["delta"] for r in settles] == [-1230]
    bal = await rows(engine, "SELECT balance, version FROM credit_accounts WHERE account = 'user:dup'")
    assert bal[0]["balance"] == 1000 * 1_000_000 - 1230
    snap = await engine.cache.snapshot("user:dup")
    assert snap == (bal[0]["balance"], 0, bal[0]["version"])
    usage = await rows(engine, "SELECT status, credits_charged, cost_usd FROM usage_log")
    assert [(u["status"], u["credits_charged"], u["cost_usd"]) for u in usage] == [("success", 1230, Decimal("0.0000123"))]


async def test_byok_places_no_hold_and_costs_nothing(engine):
    trusted = RequestContext(byok_policy="only", byok_provider="openai")  # as BYOK's pre-call sets it
    data, ctx = await place(engine, "byok-user", metadata={"litellm_plugins": trusted})
    assert ctx["hold"]["amount"] == 0 and ctx["hold"]["byok"] is True
    assert (await engine.cache.snapshot("byok-user")) is None  # not even a Redis round trip
    ctx["byok_used"] = True
    engine.on_success(success_kwargs(data, 0.5))
    await engine.writer.flush()
    assert [r["delta"] for r in await rows(engine, "SELECT delta FROM credit_ledger WHERE kind = 'settle'")] == [0]
    usage = await rows(engine, "SELECT byok, credits_charged FROM usage_log")
    assert [(u["byok"], u["credits_charged"]) for u in usage] == [(True, 0)]


async def test_reconciler_expires_stale_holds_in_postgres_and_redis(engine):
    data, ctx = await place(engine, "stale")
    amount = ctx["hold"]["amount"]
    assert amount > 0 and (await engine.cache.snapshot("user:stale"))[1] == amount
    await engine.writer.flush()
    await rows(engine, "UPDATE credit_holds SET created_at = now() - interval '2 hours'")
    # a hold Redis has but Postgres never got (the worker died before its writer flushed)
    ghost = "ghost-hold"
    await engine.cache.redis.hset(engine.cache.holds_key("user:stale"), ghost, f"777:{int(time.time()) - 7200}")
    await engine.cache.redis.hincrby(engine.cache.acct_key("user:stale"), "held", 777)
    report = await engine.reconcile_once()
    assert report["expired"] == 1 and report["released"] == 1
    assert (await engine.cache.snapshot("user:stale"))[1] == 0
    holds = await rows(engine, "SELECT status FROM credit_holds")
    assert [h["status"] for h in holds] == ["expired"]
    kinds = [r["kind"] for r in await rows(engine, "SELECT kind FROM credit_ledger ORDER BY id")]
    assert kinds == ["grant", "hold", "expire"]
    # the call finishing after all still charges, exactly once
    engine.on_success(success_kwargs(data, 0.00001))
    engine.on_success(success_kwargs(data, 0.00001))
    await engine.writer.flush()
    assert [r["delta"] for r in await rows(engine, "SELECT delta FROM credit_ledger WHERE kind = 'settle'")] == [-1000]


async def test_redis_rebuild_includes_pending_holds(engine):
    _, ctx1 = await place(engine, "rebuild")
    await engine.writer.flush()           # hold 1 in Postgres
    _, ctx2 = await place(engine, "rebuild")  # hold 2 only in this worker's queue
    await engine.cache.redis.delete(engine.cache.acct_key("user:rebuild"), engine.cache.holds_key("user:rebuild"))
    available = await public.available_units("user:rebuild")
    assert available == 1000 * 1_000_000 - ctx1["hold"]["amount"] - ctx2["hold"]["amount"]
    assert public.worst_case_units("cheap", {"messages": [], "max_tokens": 1}) > 0


async def test_insufficient_credits_message(engine):
    async with engine.rt.pool.acquire() as conn:
        await conn.execute("INSERT INTO credit_accounts (account, balance, version) VALUES ('user:broke', 5, 1)")
        await conn.execute("INSERT INTO credit_ledger (account, kind, delta, amount) VALUES ('user:broke', 'grant', 5, 5)")
    with pytest.raises(Exception) as info:
        await place(engine, "broke")
    assert info.value.code == "402" or str(info.value.code) == "402"
    assert "credits, 0.000005 available" in info.value.message


def test_spool_is_durable_bounded_and_claimable(tmp_path):
    spool = Spool(str(tmp_path), "postgresql://db-a", max_bytes=2048)
    spool.append([{"op": "settle", "id": "h1", "charge": 5}, {"op": "usage", "row": {"id": "u1"}}])
    other_db = Spool(str(tmp_path), "postgresql://db-b", max_bytes=2048)
    assert other_db.files() == []  # never replays another database's records
    with open(spool.path, "ab") as fh:
        fh.write(b'{"op": "tor')  # a crash mid-write
    fd, records = spool.claim(spool.path)
    assert [r["op"] for r in records] == ["settle", "usage"]
    assert spool.claim(spool.path) is None  # locked by the first claimer
    Spool.finish(spool.path, fd, done=True)
    assert spool.files() == []
    big = [{"op": "usage", "row": {"id": str(i), "pad": "x" * 100}} for i in range(40)]
    spool.append(big)
    spool.append([{"op": "usage", "row": {"id": "dropped"}}, {"op": "void", "id": "kept"}])
    fd, records = spool.claim(spool.path)
    Spool.finish(spool.path, fd, done=False)
    assert records[-1] == {"op": "void", "id": "kept"} and spool.dropped == 1


async def test_client_sent_context_is_not_trusted(engine):
    forged = {"byok_policy": "only", "byok_provider": "openai", "account": "user:victim",
              "hold": {"id": "x", "amount": 0}}
    data, ctx = await place(engine, "honest", metadata={"litellm_plugins": forged})
    assert ctx["account"] == "user:honest" and ctx["hold"]["amount"] > 0 and "byok" not in ctx["hold"]
    kwargs = success_kwargs(data, 0.00002)
    kwargs["litellm_params"]["metadata"] = {"litellm_plugins": {**forged, "byok_used": True}}
    engine.on_success(kwargs)  # a forged context at settle time bills by the logging payload instead
    await engine.writer.flush()
    rows_ = await rows(engine, "SELECT account, delta FROM credit_ledger WHERE kind = 'settle'")
    assert [(r["account"], r["delta"]) for r in rows_] == [("user:dup", -2000)]


async def test_first_settle_of_an_unseen_account_opens_it_with_its_starting_grant(database):
    """An account whose first call was BYOK-only (no hold, so Postgres never loaded it) must not be
    opened at 0: it gets its starting grant like any other, and the ledger still verifies."""
    from litellm_plugins.credits import store

    conn = await asyncpg.connect(database, server_settings={"search_path": "litellm_plugins"})
    try:
        await migrate(conn)
        start = credits_to_units(Decimal(1000))
        byok_only = store.HoldOp(id="h-byok", call_id="c-byok", account="user:newcomer", amount=0, ts=time.time())
        paid = store.HoldOp(id="h-paid", call_id="c-paid", account="user:other", amount=500, ts=time.time())
        async with conn.transaction():
            await store.apply_batch(conn, [byok_only, paid], [(byok_only, 0), (paid, 300)], [], start)
        rows = {r["account"]: r["balance"] for r in await conn.fetch("SELECT account, balance FROM credit_accounts")}
        assert rows == {"user:newcomer": start, "user:other": start - 300}
        grants = await conn.fetchval("SELECT count(*) FROM credit_ledger WHERE kind = 'grant'")
        assert grants == 2
        assert await store.verify(conn) == []
    finally:
        await conn.close()


def test_hold_covers_every_group_a_request_may_fall_back_to():
    from litellm_plugins.credits.pricing import request_groups

    data = {"model": "a", "fallbacks": ["b", {"model": "c"}, {"a": ["d", "b"]}, {"model": "a"}, 7]}
    assert request_groups(data) == ["a", "b", "c", "d"]
    assert request_groups({"model": "solo"}) == ["solo"]
    table = build_price_table(MODEL_LIST + [
        {"model_name": "pricey", "litellm_params": {"model": "openai/pricey", "input_cost_per_token": 0.001,
                                                    "output_cost_per_token": 0.002},
         "model_info": {"max_output_tokens": 100}}])
    request = {"model": "cheap", "fallbacks": ["pricey"], "max_tokens": 10,
               "messages": [{"role": "user", "content": "hello"}]}
    cheap = worst_case_usd(table["cheap"], request, 4.0, 4096)
    pricey = worst_case_usd(table["pricey"], request, 4.0, 4096)
    assert pricey > cheap
    assert max(worst_case_usd(table.get(g), request, 4.0, 4096) for g in request_groups(request)) == pricey


async def _journal_fields(eng: Engine, timeout: float = 3.0) -> dict[bytes, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        fields = await eng.cache.redis.hgetall(eng.cache.journal_key())
        if fields or time.monotonic() > deadline:
            return fields
        await asyncio.sleep(0.02)


async def test_response_path_journal_is_sent_without_waiting_and_survives_a_forgotten_script(engine):
    """The response-path journal returns once the command is sent (``send_journal``); its answer is
    read in the background, and a Redis that forgot the script (restart / SCRIPT FLUSH -> NOSCRIPT)
    gets the call again, so the record and the hold shrink still land. With the send-only connection
    down, the same call is awaited through redis-py instead."""
    sender = engine.cache.sender
    assert await sender.connect()
    cases = [(True, False), (True, True), (False, False)]  # (sender up, scripts flushed)
    for sender_up, flush_scripts in cases:
        if not sender_up:
            await sender.close()
        assert sender.connected is sender_up
        await engine.cache.redis.delete(engine.cache.journal_key())
        data, ctx = await place(engine, f"early{int(sender_up)}{int(flush_scripts)}")
        hold = ctx["hold"]
        assert hold["amount"] > 400
        if flush_scripts:
            await engine.cache.redis.script_flush()
        records = [{"op": "settle", "id": hold["id"], "call_id": data["litellm_call_id"],
                    "account": hold["account"], "amount": hold["amount"], "ts": hold["t0"], "charge": 400},
                   {"op": "usage", "row": engine.usage_row(ctx, {"response_cost": 0.000004}, hold,
                                                           data["litellm_call_id"], "success", 400, None, {})}]
        assert await engine.writer.journal(records)
        fields = await _journal_fields(engine)
        assert sorted(fields) == sorted([f"settle:{hold['id']}".encode(), f"usage:{hold['id']}".encode()])
        held = await engine.cache.redis.hget(engine.cache.holds_key(hold["account"]), hold["id"])
        assert held is not None and held.decode().startswith("400:"), held  # shrunk to the charge
        # the writer writes them and takes them out of the journal again
        engine.writer.put_all(records)
        await engine.writer.flush()
        assert await engine.cache.redis.hlen(engine.cache.journal_key()) == 0
        settled = await rows(engine, "SELECT delta FROM credit_ledger WHERE kind = 'settle' AND hold_id = $1",
                             hold["id"])
        assert [r["delta"] for r in settled] == [-400]


async def test_one_batch_settles_many_calls_of_one_account_with_a_consistent_ledger(engine):
    """credits_apply_batch: holds and settles of one account in one batch — each settle row's
    balance_after steps down by its own charge, ending at the account's balance; verify passes."""
    placed = [await place(engine, "batch") for _ in range(5)]
    for i, (data, _) in enumerate(placed):
        engine.on_success(success_kwargs(data, 0.000001 * (i + 1)))
    await engine.writer.flush()
    settles = await rows(engine, "SELECT delta, balance_after FROM credit_ledger WHERE kind = 'settle' "
                                 "AND account = 'user:batch' ORDER BY id")
    assert [r["delta"] for r in settles] == [-100, -200, -300, -400, -500]
    start = 1000 * 1_000_000
    assert [r["balance_after"] for r in settles] == [start - 100, start - 300, start - 600, start - 1000,
                                                     start - 1500]
    bal = await rows(engine, "SELECT balance FROM credit_accounts WHERE account = 'user:batch'")
    assert bal[0]["balance"] == start - 1500
    from litellm_plugins.credits import store
    async with engine.rt.pool.acquire() as conn:
        assert await store.verify(conn) == []


async def test_send_only_redis_sends_without_yielding_and_comes_back_after_a_drop(engine):
    """core.redis_send: ``send`` returns before any await; answers are matched in order; after the
    server drops the connection (CLIENT KILL) it comes back on its own; while down, ``send`` says False."""
    from litellm_plugins.core.redis_send import SendOnlyRedis

    sender = SendOnlyRedis(REDIS_URL)
    key = engine.cache.prefix + "sendonly"
    try:
        assert await sender.connect()
        errors: list[str] = []
        assert sender.send("SET", key, "v1", on_error=lambda e: errors.append(str(e)))
        assert sender.send("HSET", key, "f", "x", on_error=lambda e: errors.append(str(e)))  # WRONGTYPE
        assert await engine.cache.redis.get(key) in (None, b"v1")  # may or may not be applied yet
        pong = await sender.request("PING")
        assert pong == b"PONG" and await engine.cache.redis.get(key) == b"v1"
        assert len(errors) == 1 and errors[0].startswith("WRONGTYPE"), errors
        me = await sender.request("CLIENT", "ID")
        before = sender._protocol
        await engine.cache.redis.execute_command("CLIENT", "KILL", "ID", me)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not (sender.connected and sender._protocol is not before):
            await asyncio.sleep(0.01)
        assert sender.connected and sender._protocol is not before  # reconnected on its own
        assert await sender.request("CLIENT", "ID") != me
        assert sender.send("SET", key, "v2")
        assert await sender.request("GET", key) == b"v2"
        await sender.close()
        assert not sender.send("SET", key, "closed")  # down: the caller takes its awaited path
    finally:
        await sender.close()
        await engine.cache.redis.delete(key)


async def test_journal_bytes_left_in_process_memory_are_awaited_instead(engine):
    """A send-only write whose bytes the kernel did not take (its socket buffer full: Redis not
    reading) waits in the transport's buffer, in this process, where a kill -9 would lose it:
    ``in_kernel`` says so, ``send_journal`` reports it unsent and ``Writer.journal`` awaits the same
    (idempotent) call through redis-py, so the record is in Redis before the caller goes on."""
    from litellm_plugins.core.redis_send import SendOnlyRedis

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stuck = SendOnlyRedis(f"redis://127.0.0.1:{port}/0")
    real = engine.cache.sender
    try:
        assert await stuck.connect()
        assert stuck.in_kernel()
        blob = "x" * 1_000_000
        for _ in range(64):  # fill the kernel's buffers on both ends; the rest stays in ours
            assert stuck.send("SET", "k", blob)
            if not stuck.in_kernel():
                break
        assert not stuck.in_kernel()
        data, ctx = await place(engine, "stuck")
        hold = ctx["hold"]
        engine.cache.sender = stuck
        records = [{"op": "settle", "id": hold["id"], "call_id": data["litellm_call_id"],
                    "account": hold["account"], "amount": hold["amount"], "ts": hold["t0"], "charge": 300}]
        assert not engine.cache.send_journal(hold["account"], hold["id"], "settle", 300, [])
        assert await engine.writer.journal(records)
        # returned only after Redis ran it: the entry is there and the hold shrunk, no waiting
        fields = await engine.cache.redis.hgetall(engine.cache.journal_key())
        assert f"settle:{hold['id']}".encode() in fields
        held = await engine.cache.redis.hget(engine.cache.holds_key(hold["account"]), hold["id"])
        assert held is not None and held.decode().startswith("300:"), held
    finally:
        engine.cache.sender = real
        await stuck.close()
        server.close()


async def test_send_only_scripts_go_as_eval_first_on_each_connection(engine):
    """A script is sent with its text the first time on a connection (Redis caches it), by sha after:
    on the new connection after a Redis restart nothing waits for a NOSCRIPT answer to be re-sent
    (a re-send goes out only when that answer arrives: after the response the journal protects)."""
    sender = engine.cache.sender
    assert await sender.connect()
    try:
        data, ctx = await place(engine, "evalfirst")
        hold = ctx["hold"]

        async def sent_as() -> str:
            me = await sender.request("CLIENT", "ID")
            assert engine.cache.send_journal(hold["account"], hold["id"], "settle", 10, [])
            deadline = time.monotonic() + 3
            while True:
                (entry,) = await engine.cache.redis.client_list(client_id=[me])
                if entry["cmd"] != "client|id" or time.monotonic() > deadline:
                    return entry["cmd"]
                await asyncio.sleep(0.01)

        assert [await sent_as(), await sent_as()] == ["eval", "evalsha"]
        generation = sender.generation  # Redis drops the connection (as a restart would): text first again
        await engine.cache.redis.execute_command("CLIENT", "KILL", "ID", await sender.request("CLIENT", "ID"))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not (sender.connected and sender.generation > generation):
            await asyncio.sleep(0.01)
        assert [await sent_as(), await sent_as()] == ["eval", "evalsha"]
        held = await engine.cache.redis.hget(engine.cache.holds_key(hold["account"]), hold["id"])
        assert held is not None and held.decode().startswith("10:"), held
    finally:
        await sender.close()


async def test_hold_through_the_send_only_connection_and_after_a_forgotten_script(engine):
    """With the send-only connection up, the hold is one write + one awaited answer; a Redis that
    forgot the script answers NOSCRIPT and the hold goes through redis-py (which reloads it); an
    insufficient balance is still refused with the amounts."""
    sender = engine.cache.sender
    engine.leases.requests = 0  # leases have their own tests (test_credits_lease): exact holds only here
    assert await sender.connect()
    try:
        me = await sender.request("CLIENT", "ID")

        async def last_command_of_sender() -> str:
            (entry,) = await engine.cache.redis.client_list(client_id=[me])
            return entry["cmd"]

        assert await last_command_of_sender() == "client|id"
        data, ctx = await place(engine, "viasend")
        assert ctx["hold"]["amount"] > 0 and await last_command_of_sender() == "evalsha"
        held = await engine.cache.redis.hget(engine.cache.holds_key("user:viasend"), ctx["hold"]["id"])
        assert held is not None and held.decode().startswith(f"{ctx['hold']['amount']}:")
        await engine.cache.redis.script_flush()
        data2, ctx2 = await place(engine, "viasend")
        snap = await engine.cache.snapshot("user:viasend")
        assert snap is not None and snap[1] == ctx["hold"]["amount"] + ctx2["hold"]["amount"]
        status, balance, held_total, leased, _, _ = await engine.cache.hold("user:viasend", "too-big", 10 ** 15)
        assert (status, balance, held_total, leased) == (0, snap[0], snap[1], 0)
    finally:
        await sender.close()


async def test_a_flush_writes_what_was_queued_when_it_started_and_requeues_on_cancel(engine, database):
    """Records that arrive while a batch is being written wait for the next flush (draining until
    empty wrote a batch of one record after every batch under steady load); a flush cancelled
    mid-write (shutdown) leaves its unwritten records queued, so ``stop`` still writes them."""
    first = [await place(engine, "snap") for _ in range(3)]
    await engine.writer.flush()  # opens the account and writes the three hold rows
    for data, _ in first:
        engine.on_success(success_kwargs(data, 0.000001))
    blocker = await asyncpg.connect(database, server_settings={"search_path": "litellm_plugins"})
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("SELECT 1 FROM credit_accounts WHERE account = 'user:snap' FOR UPDATE")
    try:
        flush = asyncio.create_task(engine.writer.flush())
        await asyncio.sleep(0.3)  # the batch of three is blocked on the row lock
        assert not flush.done() and engine.writer.queue == []
        late = [await place(engine, "snap") for _ in range(2)]
        for data, _ in late:
            engine.on_success(success_kwargs(data, 0.000001))
        assert len(engine.writer.queue) == 6  # two holds, two settles, two usage rows
        await tx.rollback()
        await asyncio.wait_for(flush, 5)
        assert len(engine.writer.queue) == 6, "records queued during the write wait for the next flush"
        settles = await rows(engine, "SELECT count(*) AS n FROM credit_ledger WHERE kind = 'settle'")
        assert settles[0]["n"] == 3
        # Cancelled while blocked: the batch goes back to the queue, in order, and is written later.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM credit_accounts WHERE account = 'user:snap' FOR UPDATE")
        queued = list(engine.writer.queue)
        flush = asyncio.create_task(engine.writer.flush())
        await asyncio.sleep(0.3)
        assert engine.writer.queue == []
        flush.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flush
        assert engine.writer.queue == queued
        await tx.rollback()
    finally:
        await blocker.close()
    await engine.writer.stop()
    assert engine.writer.queue == []
    settles = await rows(engine, "SELECT count(*) AS n FROM credit_ledger WHERE kind = 'settle'")
    assert settles[0]["n"] == 5
    async with engine.rt.pool.acquire() as conn:
        assert await store.verify(conn) == []


def test_on_redis_error_defaults_to_the_postgres_path():
    s = parse_settings({"database_url": "x", "redis_url": "y"})
    assert s.credits.on_redis_error == "postgres"
    with pytest.raises(SettingsError, match=r"litellm_plugins.credits.on_redis_error"):
        parse_settings({"database_url": "x", "redis_url": "y", "credits": {"on_redis_error": "yes"}})


async def test_postgres_holds_are_exact_under_a_race_and_follow_the_mode(database):
    """The Postgres path (policies/postgres.py) against real Postgres: refused while Redis is the
    store, too early inside the switch grace, then exact under 40 concurrent holds (row lock), the
    worker's unflushed Redis holds counted, idempotent per hold id; a switch back that cannot reach
    Redis leaves Postgres in charge, one that can drops the cached accounts and hands holds back."""
    conn = await asyncpg.connect(database)
    await migrate(conn)
    await conn.close()
    pool = await create_pool(database, 1, 20)
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there: Redis is down
    live = aioredis.Redis.from_url(REDIS_URL)
    prefix = f"lp_test_{uuid.uuid4().hex[:8]}:"
    try:
        pg = PostgresHolds(pool, CreditCache(dead, prefix), starting_units=1000, writer_interval=0.0)
        pg.grace = 0.3
        now = time.time()
        assert (await pg.hold("h-early", "c", "user:race", 100, now, 0))[0] == NOT_POSTGRES
        await pg.enter()
        status, _, _, wait_ms, _, _ = await pg.hold("h-early", "c", "user:race", 100, now, 0)
        assert status == TOO_EARLY and 0 < wait_ms <= 300
        await asyncio.sleep(0.35)
        results = await asyncio.gather(*(pg.hold(f"h{i}", f"c{i}", "user:race", 150, now, 0) for i in range(40)))
        placed = [r for r in results if r[0] == PLACED]
        assert len(placed) == 1000 // 150 and all(r[0] == 0 for r in results if r[0] != PLACED)
        assert max(r[2] for r in placed) == 900 and {r[1] for r in results} == {1000}
        again = await pg.hold("h0", "c0", "user:race", 150, now, 0) if results[0][0] == PLACED else None
        assert again is None or again[0] == PLACED
        assert (await pg.hold("h-unflushed", "c", "user:race", 100, now, 1))[0] == 0  # 100 free, 1 unit elsewhere
        assert (await pg.hold("h-last", "c", "user:race", 100, now, 0))[0] == PLACED
        async with pool.acquire() as c:
            assert await c.fetchval("SELECT sum(amount) FROM credit_holds WHERE account = 'user:race' "
                                    "AND status = 'pending'") == 1000
            assert await c.fetchval("SELECT count(*) FROM credit_ledger WHERE account = 'user:race' "
                                    "AND kind = 'hold'") == 7
            assert await store.verify(c) == []
        with pytest.raises(RedisConnectionError):  # the transaction rolls back: mode stays 'postgres'
            await pg.switch_back()
        assert pg.active and (await pg.hold("h-more", "c", "user:race", 0, now, 0))[0] == PLACED
        live_pg = PostgresHolds(pool, CreditCache(live, prefix), starting_units=1000, writer_interval=0.0)
        await live.hset(f"{prefix}credits:acct:user:race", mapping={"balance": 1000, "held": 0, "version": 1})
        await live.hset(f"{prefix}credits:holds:user:race", "h-redis", "5:0")
        await live_pg.switch_back()
        assert not await live.exists(f"{prefix}credits:acct:user:race")  # rebuilt from Postgres on next use
        assert await live.exists(f"{prefix}credits:holds:user:race")  # Redis-placed holds are kept
        assert (await pg.hold("h-after", "c", "user:race", 0, now, 0))[0] == NOT_POSTGRES
    finally:
        keys = [k async for k in live.scan_iter(match=prefix + "*")]
        if keys:
            await live.delete(*keys)
        await live.aclose()
        await dead.aclose()
        await pool.close()


async def test_a_crowd_of_cold_accounts_opens_in_few_batches_with_one_grant_each(engine):
    """Two workers' loaders (two engines, one Postgres and Redis) asked for the same 150 new accounts,
    three times each, all at once: every account is opened once with one starting grant, in a handful
    of round trips rather than one per request (cold.ColdLoader, credits_open_accounts)."""
    other = Engine(engine.rt)
    accounts = [f"user:crowd-{i}" for i in range(150)]
    await asyncio.gather(*(eng.ensure_cached(a) for a in accounts for eng in (engine, other, engine)))
    starting = 1000 * 1_000_000
    grants = await rows(engine, "SELECT account, count(*) AS n, min(delta) AS lo, max(delta) AS hi FROM credit_ledger "
                                "WHERE kind = 'grant' AND account = ANY($1::text[]) GROUP BY account", accounts)
    assert len(grants) == 150 and {(g["n"], g["lo"], g["hi"]) for g in grants} == {(1, starting, starting)}
    assert {tuple(await engine.cache.snapshot(a)) for a in accounts} == {(starting, 0, 1)}
    batches = engine.cold.stats["batches"] + other.cold.stats["batches"]
    assert engine.cold.stats["accounts"] == 150 and 2 <= batches <= 6, (engine.cold.stats, other.cold.stats)


async def test_a_known_account_missing_from_redis_is_rebuilt_not_granted_again(engine):
    """FLUSHALL / eviction / a new worker: an account Postgres knows is read back with its spent
    balance and pending holds, in the same batch as brand-new accounts, never opened a second time."""
    data, ctx = await place(engine, "known")
    await engine.record_success(success_kwargs(data, 0.001))
    _, pending = await place(engine, "known")
    await engine.writer.flush()
    spent = 1000 * 1_000_000 - 100_000  # 0.001 USD x 100 credits/USD
    await engine.cache.redis.delete(engine.cache.acct_key("user:known"))
    await asyncio.gather(engine.ensure_cached("user:known"),
                         *(engine.ensure_cached(f"user:fresh-{i}") for i in range(20)))
    assert await engine.cache.snapshot("user:known") == (spent, pending["hold"]["amount"], 2)
    grants = await rows(engine, "SELECT count(*) AS n FROM credit_ledger WHERE kind = 'grant' AND account = $1",
                        "user:known")
    assert grants[0]["n"] == 1
    async with engine.rt.pool.acquire() as conn:
        assert await store.verify(conn) == []


async def test_a_cold_batch_survives_a_script_forgotten_between_check_and_send(engine, monkeypatch):
    """A pipeline checks its scripts before sending them; a SCRIPT FLUSH (or Redis restart) in between
    answers NOSCRIPT. That batch must not fail its requests (it sent 17 of them to the Postgres path
    on the shared test Redis): it is sent again, and the script reloaded. Simulated without flushing
    the shared Redis: the first send of a pipeline answers NOSCRIPT."""
    from redis.asyncio.client import Pipeline
    from redis.exceptions import NoScriptError

    real = Pipeline.execute
    refused: list[bool] = []

    async def forgotten_once(self, *args, **kwargs):
        if not refused:
            refused.append(True)
            await self.reset()
            raise NoScriptError("No matching script. Please use EVAL.")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", forgotten_once)
    await asyncio.gather(*(engine.ensure_cached(f"user:noscript-{i}") for i in range(5)))
    assert refused and {tuple(await engine.cache.snapshot(f"user:noscript-{i}")) for i in range(5)} == {
        (1000 * 1_000_000, 0, 1)}
