"""Credits + usage end to end: real proxy processes, real Postgres and Redis, the fake provider."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
import yaml

from tests.support.fake_provider import FakeProvider
from tests.support.proxy import MASTER_KEY
from tests.support.services import REDIS_URL

PROXY_CFG = yaml.safe_load((Path(__file__).resolve().parents[1] / "proxy_config.yaml").read_text())
PRICES = {m["model_name"]: (Decimal(str(m["litellm_params"].get("input_cost_per_token", 0))),
                            Decimal(str(m["litellm_params"].get("output_cost_per_token", 0))))
          for m in PROXY_CFG["model_list"]}
UPSTREAM = {m["model_name"]: m["litellm_params"]["model"].split("/", 1)[1] for m in PROXY_CFG["model_list"]}
RATE = Decimal(100)
UNIT = Decimal(1_000_000)
OTHERS_OFF = {"routing": {"enabled": False}, "byok": {"enabled": False}, "health": {"enabled": False}}
CREDITS = {"enabled": True, "starting_grant": 1000, "credits_per_usd": 100, "tier_markup": {"pro": 1.5},
           "writer_interval_seconds": 0.05, "reconcile_interval_seconds": 1}


def expected_units(model: str, body: dict, markup: Decimal = Decimal(1), completion: int = 8) -> int:
    prompt = FakeProvider.prompt_tokens(body)
    limit = body.get("max_tokens")
    completion = min(completion, limit) if limit else completion
    inp, out = PRICES[model]
    cost = prompt * inp + completion * out
    return int((cost * RATE * markup * UNIT).to_integral_value(ROUND_HALF_UP))


def credits(units: int) -> str:
    return str((Decimal(units) / UNIT).quantize(Decimal("0.000001")))


def units_of(text: str) -> int:
    return int(Decimal(text) * UNIT)


@pytest.fixture(scope="module")
def spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(scope="module")
def proxy(start_proxy, spool_dir):
    return start_proxy(plugins={**OTHERS_OFF, "credits": {**CREDITS, "spool_dir": str(spool_dir)}})


@pytest.fixture(scope="module")
def proxy2(start_proxy, spool_dir, proxy):
    return start_proxy(plugins={**OTHERS_OFF, "credits": {**CREDITS, "spool_dir": str(spool_dir)}}, name="second")


async def db_fetch(dsn: str, sql: str, *args):
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "litellm_plugins"})
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def wait_for(dsn: str, sql: str, *args, expect, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await db_fetch(dsn, sql, *args)
        if expect(rows) or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)


def balance(proxy, key: str) -> dict:
    with proxy.client(key) as c:
        r = c.get("/plugins/credits/balance")
    assert r.status_code == 200, r.text
    return r.json()


def chat(proxy, key: str, model: str, content: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    with proxy.client(key) as c:
        return c.post("/v1/chat/completions", json=body)


async def settled(dsn: str, account: str, n: int) -> list:
    return await wait_for(dsn, "SELECT * FROM credit_ledger WHERE account = $1 AND kind = 'settle' ORDER BY id",
                          account, expect=lambda rows: len(rows) >= n)


async def test_plain_request_charges_exactly_litellm_cost(proxy, keys, fake, module_database):
    keys.add("sk-plain", user_id="plain-user")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world, how are you?"}],
            "max_tokens": 20}
    with proxy.client("sk-plain") as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    want = expected_units("gpt-4o-mini", body)
    assert r.headers["x-litellm-plugins-credits-charged"] == credits(want)
    rows = await settled(module_database, "user:plain-user", 1)
    assert [row["delta"] for row in rows] == [-want]
    b = balance(proxy, "sk-plain")
    assert units_of(b["balance"]) == 1000 * 1_000_000 - want
    assert r.headers["x-litellm-plugins-credits-balance"] == b["balance"]
    assert units_of(r.headers["x-litellm-plugins-credits-held"]) >= want
    kinds = [row["kind"] for row in await db_fetch(
        module_database, "SELECT kind FROM credit_ledger WHERE account = 'user:plain-user' ORDER BY id")]
    assert kinds == ["grant", "hold", "settle"]
    usage = await wait_for(module_database, "SELECT * FROM usage_log WHERE account = 'user:plain-user'",
                           expect=lambda rows: len(rows) == 1)
    assert usage[0]["status"] == "success" and usage[0]["credits_charged"] == want
    assert usage[0]["prompt_tokens"] == FakeProvider.prompt_tokens(body) and usage[0]["completion_tokens"] == 8
    assert usage[0]["model_group"] == "gpt-4o-mini" and usage[0]["provider"] == "openai"
    assert usage[0]["user_id"] == "plain-user" and usage[0]["stream"] is False
    assert usage[0]["latency_ms"] is not None and usage[0]["deployment"]


async def test_streamed_request_charges_exactly_and_markup_applies(proxy, keys, fake, module_database):
    keys.add("sk-stream", user_id="stream-user", metadata={"tier": "pro"})
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "stream me something nice"}],
            "max_tokens": 50, "stream": True}
    with proxy.client("sk-stream") as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            text = "".join(r.iter_text())
            headers = r.headers
    assert "[DONE]" in text
    assert "x-litellm-plugins-credits-held" in headers
    assert "x-litellm-plugins-credits-charged" not in headers  # cost unknown when headers leave
    want = expected_units("gpt-4o", body, markup=Decimal("1.5"))
    rows = await settled(module_database, "user:stream-user", 1)
    assert [row["delta"] for row in rows] == [-want]
    usage = await wait_for(module_database, "SELECT * FROM usage_log WHERE account = 'user:stream-user'",
                           expect=lambda rows: len(rows) == 1)
    assert usage[0]["stream"] is True and usage[0]["credits_charged"] == want
    assert units_of(balance(proxy, "sk-stream")["balance"]) == 1000 * 1_000_000 - want
    # journalled before [DONE] with LiteLLM's own cost: the callback found the same charge
    assert "differs from LiteLLM's response_cost" not in proxy.log_text()


async def test_insufficient_credits_is_402_and_provider_never_called(proxy, keys, fake, module_database):
    keys.add("sk-poor", user_id="poor-user")
    body = {"model": "claude-opus-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1_000_000}
    for stream in (False, True):
        with proxy.client("sk-poor") as c:
            r = c.post("/v1/chat/completions", json={**body, "stream": stream})
        assert r.status_code == 402, r.text
        err = r.json()["error"]
        assert err["type"] == "insufficient_credits" and str(err["code"]) == "402"
        want = credits(hold_units("claude-opus-4", body))
        assert err["message"] == f"Insufficient credits: requested up to {want} credits, 1000.000000 available"
    assert fake.provider.calls == []
    usage = await wait_for(module_database, "SELECT * FROM usage_log WHERE account = 'user:poor-user'",
                           expect=lambda rows: len(rows) == 2)
    assert {(u["status"], u["error_type"]) for u in usage} == {("rejected", "insufficient_credits")}
    assert all(u["credits_charged"] == 0 for u in usage)
    assert units_of(balance(proxy, "sk-poor")["available"]) == 1000 * 1_000_000


async def test_provider_failure_charges_nothing(proxy, keys, fake, module_database):
    keys.add("sk-fail", user_id="fail-user")
    chat(proxy, "sk-fail", "gpt-4o-mini", "warm up", max_tokens=5)  # opens the account
    await settled(module_database, "user:fail-user", 1)
    before = balance(proxy, "sk-fail")
    fake.provider.fail(500, times=None, models={"gpt-4o-mini"})
    r = chat(proxy, "sk-fail", "gpt-4o-mini", "this will fail", max_tokens=5)
    assert r.status_code >= 500, r.text
    holds = await wait_for(module_database, "SELECT status FROM credit_holds WHERE account = 'user:fail-user' "
                           "ORDER BY created_at", expect=lambda rows: [h["status"] for h in rows] == ["settled", "voided"])
    assert [h["status"] for h in holds] == ["settled", "voided"]
    after = balance(proxy, "sk-fail")
    assert after["balance"] == before["balance"] and after["held"] == "0.000000"
    usage = await wait_for(module_database, "SELECT * FROM usage_log WHERE account = 'user:fail-user' "
                           "AND status = 'failure'", expect=lambda rows: len(rows) == 1)
    assert usage[0]["credits_charged"] == 0 and usage[0]["error_type"]


def _parallel(targets: list[tuple[object, str]], body: dict) -> list[int]:
    def one(target):
        proxy, key = target
        with proxy.client(key, timeout=60) as c:
            return c.post("/v1/chat/completions", json=body).status_code
    with ThreadPoolExecutor(len(targets)) as pool:
        return list(pool.map(one, targets))


def hold_units(model: str, body: dict) -> int:
    text = "".join(m["content"] for m in body["messages"])
    prompt = -(-len(text.encode()) // 3) + 4 * len(body["messages"]) + 8
    inp, out = PRICES[model]
    usd = prompt * inp + body["max_tokens"] * out
    return int((usd * RATE * UNIT).to_integral_value(ROUND_CEILING))


async def _concurrency_case(targets, fake, dsn, account: str) -> None:
    body = {"model": "claude-opus-4", "messages": [{"role": "user", "content": "race"}], "max_tokens": 32000}
    per_hold = hold_units("claude-opus-4", body)
    k = (1000 * 1_000_000) // per_hold
    assert 2 <= k < len(targets)
    fake.provider.set_delay(1.5, UPSTREAM["claude-opus-4"])
    statuses = _parallel(targets, body)
    assert statuses.count(200) <= k and statuses.count(200) >= 1, statuses
    assert set(statuses) <= {200, 402}, statuses
    ok = statuses.count(200)
    assert len(fake.provider.calls_to(UPSTREAM["claude-opus-4"])) == ok
    rows = await settled(dsn, account, ok)
    charge = expected_units("claude-opus-4", body)
    assert [r["delta"] for r in rows] == [-charge] * ok
    bal = await db_fetch(dsn, "SELECT balance FROM credit_accounts WHERE account = $1", account)
    assert bal[0]["balance"] == 1000 * 1_000_000 - ok * charge >= 0


def plugins_cli(proxy, dsn: str, *args: str) -> subprocess.CompletedProcess:
    """``litellm-plugins --config <the proxy's config> ARGS`` against ``dsn``."""
    env = {**proxy.process_env(), "LITELLM_PLUGINS_DATABASE_URL": dsn}
    return subprocess.run([sys.executable, "-m", "litellm_plugins.cli", "--config", str(proxy.config_path),
                           *args], env=env, capture_output=True, text=True, timeout=60)


def verify_cli(proxy, dsn: str) -> subprocess.CompletedProcess:
    return plugins_cli(proxy, dsn, "credits", "verify")


async def test_parallel_requests_never_overspend_one_proxy(proxy, keys, fake, module_database):
    keys.add("sk-race1", user_id="race-one")
    await _concurrency_case([(proxy, "sk-race1")] * 8, fake, module_database, "user:race-one")
    result = verify_cli(proxy, module_database)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


async def test_parallel_requests_never_overspend_two_proxies(proxy, proxy2, keys, fake, module_database):
    keys.add("sk-race2", user_id="race-two")
    await _concurrency_case([(proxy, "sk-race2"), (proxy2, "sk-race2")] * 4, fake, module_database, "user:race-two")
    result = verify_cli(proxy, module_database)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_verify_reports_a_tampered_balance(proxy, module_database):
    await db_fetch(module_database, "UPDATE credit_accounts SET balance = balance + 1 WHERE account = 'user:race-one'")
    try:
        result = verify_cli(proxy, module_database)
        assert result.returncode != 0
        assert "user:race-one" in result.stdout and "MISMATCH" in result.stdout
    finally:
        await db_fetch(module_database, "UPDATE credit_accounts SET balance = balance - 1 WHERE account = 'user:race-one'")


def grant(proxy, body, key: str = MASTER_KEY) -> httpx.Response:
    with proxy.client(key) as c:
        return c.post("/plugins/credits/grant", json=body)


@pytest.mark.parametrize("body, param, fragment", [
    ({"account": "user:plain-user", "amount": "0", "idempotency_key": "k0"}, "amount", "greater than zero"),
    ({"account": "user:plain-user", "amount": "-5", "idempotency_key": "k1"}, "amount", "greater than zero"),
    ({"account": "user:plain-user", "amount": "ten", "idempotency_key": "k2"}, "amount", "decimal number"),
    ({"account": "user:plain-user", "amount": True, "idempotency_key": "k3"}, "amount", "decimal number"),
    ({"account": "user:plain-user", "amount": "1e12", "idempotency_key": "k4"}, "amount", "largest allowed"),
    ({"account": "user:plain-user", "amount": "NaN", "idempotency_key": "k5"}, "amount", "finite"),
    ({"account": "user:plain-user", "amount": "0.0000001", "idempotency_key": "k6"}, "amount", "6 decimal"),
    ({"account": "user:nobody-ever", "amount": "5", "idempotency_key": "k7"}, "account", "unknown account"),
    ({"account": "nobody", "amount": "5", "idempotency_key": "k8"}, "account", "user:<id>"),
    ({"account": "user:plain-user", "amount": "5"}, "idempotency_key", "idempotency_key is required"),
    ({"account": "user:plain-user", "amount": "5", "idempotency_key": "k9", "bonus": 1}, "bonus", "unknown field"),
])
def test_grant_validation_is_400_with_clear_message(proxy, body, param, fragment):
    r = grant(proxy, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert fragment in err["message"] and err["param"] == param


async def test_grant_is_idempotent_and_updates_balance(proxy, keys, module_database):
    keys.add("sk-topup", user_id="topup-user")
    before = balance(proxy, "sk-topup")
    assert before["opened"] is False and before["balance"] == "1000.000000"
    body = {"account": "user:topup-user", "amount": "12.5", "idempotency_key": "topup-1", "create": True}
    first = grant(proxy, body)
    assert first.status_code == 200, first.text
    assert first.json()["balance"] == "1012.500000" and first.json()["replayed"] is False
    again = grant(proxy, body)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["ledger_id"] == first.json()["ledger_id"] and again.json()["balance"] == "1012.500000"
    assert balance(proxy, "sk-topup")["balance"] == "1012.500000"
    conflict = grant(proxy, {**body, "amount": "13"})
    assert conflict.status_code == 409
    rows = await db_fetch(module_database, "SELECT kind, delta FROM credit_ledger WHERE account = $1 ORDER BY id",
                          "user:topup-user")
    assert [(r["kind"], r["delta"]) for r in rows] == [("grant", 1000 * 1_000_000), ("grant", 12_500_000)]
    # numbers work too, and concurrent identical grants apply once
    body2 = {"account": "user:topup-user", "amount": 2, "idempotency_key": "topup-2"}
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: grant(proxy, body2), range(6)))
    assert {r.status_code for r in results} == {200}
    assert sum(not r.json()["replayed"] for r in results) == 1
    assert balance(proxy, "sk-topup")["balance"] == "1014.500000"


def test_grant_needs_admin_and_non_admin_sees_only_own(proxy, keys):
    keys.add("sk-nosy", user_id="nosy-user")
    assert chat(proxy, "sk-nosy", "gpt-4o-mini", "open my account", max_tokens=5).status_code == 200
    r = grant(proxy, {"account": "user:nosy-user", "amount": "5", "idempotency_key": "x1", "create": True},
              key="sk-nosy")
    assert r.status_code == 403
    with proxy.client("sk-nosy") as c:
        assert c.get("/plugins/credits/balance", params={"account": "user:plain-user"}).status_code == 403
        assert c.get("/plugins/credits/ledger", params={"account": "user:plain-user"}).status_code == 403
        own = c.get("/plugins/credits/ledger")
        assert own.status_code == 200 and own.json()["account"] == "user:nosy-user"
    with proxy.client(MASTER_KEY) as c:
        r = c.get("/plugins/credits/ledger", params={"account": "user:nosy-user"})
        assert r.status_code == 200 and [e["kind"] for e in r.json()["entries"]][-1] == "grant"
        assert r.json()["entries"][-1]["delta"] == "1000.000000"
        assert c.get("/plugins/credits/balance", params={"account": "user:nobody-ever"}).status_code == 404


def test_cli_grant_balance_ledger(proxy, module_database):
    env = {**proxy.process_env(), "LITELLM_PLUGINS_DATABASE_URL": module_database}
    base = [sys.executable, "-m", "litellm_plugins.cli", "--config", str(proxy.config_path), "credits"]
    run = lambda *a: subprocess.run([*base, *a], env=env, capture_output=True, text=True, timeout=60)  # noqa: E731
    r = run("grant", "user:cli-user", "3.25", "--idempotency-key", "cli-1", "--create")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["balance"] == "1003.250000"
    r = run("grant", "user:cli-user", "3.25", "--idempotency-key", "cli-1")
    assert json.loads(r.stdout)["replayed"] is True
    r = run("grant", "user:cli-user", "-1", "--idempotency-key", "cli-2")
    assert r.returncode == 1 and "greater than zero" in r.stderr
    r = run("balance", "user:cli-user")
    assert json.loads(r.stdout)["balance"] == "1003.250000"
    r = run("ledger", "user:cli-user")
    assert [json.loads(line)["kind"] for line in r.stdout.splitlines()] == ["grant", "grant"]


async def test_failed_attempt_then_successful_retry_charges_once(proxy, keys, fake, module_database):
    keys.add("sk-retry", user_id="retry-user")
    fake.provider.fail(500, times=1, models={UPSTREAM["gpt-4o-mini"]})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "retry me please"}], "max_tokens": 9}
    with proxy.client("sk-retry") as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert [call.status for call in fake.provider.calls] == [500, 200]
    rows = await settled(module_database, "user:retry-user", 1)
    await asyncio.sleep(0.5)
    rows = await db_fetch(module_database, "SELECT delta FROM credit_ledger WHERE account = 'user:retry-user' "
                          "AND kind = 'settle'")
    assert [row["delta"] for row in rows] == [-expected_units("gpt-4o-mini", body)]
    usage = await db_fetch(module_database, "SELECT status FROM usage_log WHERE account = 'user:retry-user'")
    assert [u["status"] for u in usage] == ["success"]


async def test_a_busy_account_holds_from_a_lease_charges_exactly_and_gives_it_back(proxy, keys, fake,
                                                                                    module_database):
    """Sequential requests of one account: after the first two, the proxy takes holds out of a
    per-worker lease (a ``lease:`` entry in the account's Redis holds while the traffic lasts,
    credits/lease.py); every request is still charged exactly once, and soon after the traffic
    stops the lease is given back: nothing held, the balance exact, the books verify."""
    keys.add("sk-lessee", user_id="lessee")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "lease me"}], "max_tokens": 20}
    holds_key = f"{proxy.config['litellm_plugins']['redis_key_prefix']}credits:holds:user:lessee"
    rds = redis.Redis.from_url(REDIS_URL)
    leases_seen, leased_shown = set(), set()
    with proxy.client("sk-lessee") as c:
        for _ in range(20):
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            fields = rds.hkeys(holds_key)
            leases_seen |= {f for f in fields if f.startswith(b"lease:")}
            shown = c.get("/plugins/credits/balance").json()  # the API shows leases apart from held
            assert units_of(shown["available"]) == units_of(shown["balance"]) - units_of(shown["held"]) \
                - units_of(shown["leased"]), shown
            leased_shown.add(units_of(shown["leased"]))
            worst = units_of(r.headers["x-litellm-plugins-credits-held"])  # what each hold sets aside
    assert leases_seen, "no request was held from a lease"
    assert max(leased_shown) == 8 * worst, (leased_shown, worst)  # lease_requests worst cases, untouched
    want = expected_units("gpt-4o-mini", body)
    rows = await settled(module_database, "user:lessee", 20)
    assert [row["delta"] for row in rows] == [-want] * 20
    deadline = time.time() + 10
    while True:
        left, b = rds.hgetall(holds_key), balance(proxy, "sk-lessee")
        if (not left and b["held"] == b["leased"] == "0.000000") or time.time() > deadline:
            break
        time.sleep(0.1)
    assert not left and b["held"] == "0.000000" and b["leased"] == "0.000000", (left, b)
    assert units_of(b["balance"]) == 1000 * 1_000_000 - 20 * want
    result = verify_cli(proxy, module_database)
    assert result.returncode == 0, result.stdout + result.stderr
