"""Redis flushed and Postgres stopped mid-run: no charge lost or doubled, no usage row lost.

Runs against a private Postgres cluster and a private Redis (tests/support/private_services.py) so
stopping or flushing them never disturbs other tests using the shared services.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import asyncpg
import pytest

from tests.test_credits_e2e import CREDITS, OTHERS_OFF, expected_units, verify_cli

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "outage test message"}], "max_tokens": 6}
START = 1000 * 1_000_000


@pytest.fixture(scope="module")
def spool_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outage-spool")


@pytest.fixture(scope="module")
def launch(pg, rds, spool_dir, start_proxy):  # pg/redis first: they must outlive the proxies
    def go(name: str):
        return start_proxy(plugins={**OTHERS_OFF, "credits": {**CREDITS, "spool_dir": str(spool_dir)}},
                           name=name, env={"LITELLM_PLUGINS_DATABASE_URL": pg.dsn,
                                           "LITELLM_PLUGINS_REDIS_URL": rds.url})
    return go


@pytest.fixture(scope="module")
def proxy(launch):
    return launch("outage")


async def fetch(dsn: str, sql: str, *args):
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "litellm_plugins"})
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def eventually(dsn: str, sql: str, *args, expect, timeout: float = 30.0):
    deadline = time.time() + timeout
    rows = None
    while time.time() < deadline:
        try:
            rows = await fetch(dsn, sql, *args)
            if expect(rows):
                return rows
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        await asyncio.sleep(0.2)
    return rows


class Load:
    """Background clients sending requests until stopped; records every status code."""

    def __init__(self, proxy, key: str, clients: int = 3) -> None:
        self.proxy, self.key = proxy, key
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with self.proxy.client(self.key) as c:
            while not self._stop.is_set():
                self.statuses.append(c.post("/v1/chat/completions", json=BODY).status_code)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


async def check_books(proxy, pg, account: str, ok: int) -> None:
    charge = expected_units("gpt-4o-mini", BODY)
    settles = await eventually(pg.dsn, "SELECT delta FROM credit_ledger WHERE account = $1 AND kind = 'settle'",
                               account, expect=lambda rows: len(rows) >= ok)
    assert len(settles) == ok and {r["delta"] for r in settles} == {-charge}
    bal = await fetch(pg.dsn, "SELECT balance FROM credit_accounts WHERE account = $1", account)
    assert bal[0]["balance"] == START - ok * charge
    usage = await eventually(pg.dsn, "SELECT status FROM usage_log WHERE account = $1 AND status = 'success'",
                             account, expect=lambda rows: len(rows) >= ok)
    assert len(usage) == ok
    result = verify_cli(proxy, pg.dsn)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_redis_flushall_mid_run_leaves_balances_right(proxy, keys, fake, pg, rds):
    keys.add("sk-flush", user_id="flush-user")
    with Load(proxy, "sk-flush") as load:
        time.sleep(1.5)
        rds.client().flushall()
        time.sleep(1.5)
        rds.client().flushall()
        time.sleep(1.0)
    ok = load.statuses.count(200)
    assert ok > 10 and set(load.statuses) == {200}, load.statuses
    assert len(fake.provider.calls) == ok
    await check_books(proxy, pg, "user:flush-user", ok)
    # the Redis cache converges to Postgres: balance equal, nothing left held
    deadline = time.time() + 10
    while time.time() < deadline:
        with proxy.client("sk-flush") as c:
            b = c.get("/plugins/credits/balance").json()
        cached = rds.client().hgetall(f"{proxy.config['litellm_plugins']['redis_key_prefix']}credits:acct:user:flush-user")
        if b["held"] == "0.000000" and cached and int(cached[b"balance"]) * 1 == int(
                (await fetch(pg.dsn, "SELECT balance FROM credit_accounts WHERE account = 'user:flush-user'"))[0]["balance"]):
            break
        time.sleep(0.3)
    holds = rds.client().hgetall(f"{proxy.config['litellm_plugins']['redis_key_prefix']}credits:holds:user:flush-user")
    assert b["held"] == "0.000000", (b, holds)
    assert int(cached[b"balance"]) == START - ok * expected_units("gpt-4o-mini", BODY)


async def test_postgres_stopped_mid_run_loses_nothing(proxy, keys, fake, pg):
    keys.add("sk-pgdown", user_id="pgdown-user")
    with proxy.client("sk-pgdown") as c:  # open the account while Postgres is up
        assert c.post("/v1/chat/completions", json=BODY).status_code == 200
    with Load(proxy, "sk-pgdown") as load:
        time.sleep(1.0)
        pg.stop()
        time.sleep(3.0)
        down_count = len(load.statuses)
        pg.start()
        time.sleep(1.5)
    ok = load.statuses.count(200) + 1
    assert set(load.statuses) == {200}, load.statuses
    assert down_count > 5
    await check_books(proxy, pg, "user:pgdown-user", ok)


async def test_redis_down_rejects_cleanly_then_recovers(proxy, keys, fake, rds, pg):
    keys.add("sk-rdown", user_id="rdown-user")
    with proxy.client("sk-rdown") as c:
        assert c.post("/v1/chat/completions", json=BODY).status_code == 200
        rds.stop()
        try:
            r = c.post("/v1/chat/completions", json=BODY)
            assert r.status_code == 503, r.text
            assert "credit service is unavailable" in r.json()["error"]["message"]
            calls = len(fake.provider.calls)
        finally:
            rds.start()
        assert calls == 1  # the provider was not called without a hold
        deadline = time.time() + 20
        while time.time() < deadline:
            r = c.post("/v1/chat/completions", json=BODY)
            if r.status_code == 200:
                break
            time.sleep(0.5)
        assert r.status_code == 200, r.text
    await check_books(proxy, pg, "user:rdown-user", 2)
    rejected = await eventually(pg.dsn, "SELECT error_type FROM usage_log WHERE account = 'user:rdown-user' "
                                "AND status <> 'success'", expect=lambda rows: len(rows) == 1)
    assert [r["error_type"] for r in rejected] == ["service_unavailable"]


async def test_spool_survives_a_proxy_restart_while_postgres_is_down(launch, proxy, keys, fake, pg, spool_dir):
    keys.add("sk-restart", user_id="restart-user")
    with proxy.client("sk-restart") as c:
        assert c.post("/v1/chat/completions", json=BODY).status_code == 200
    await eventually(pg.dsn, "SELECT 1 FROM credit_ledger WHERE account = 'user:restart-user' AND kind = 'settle'",
                     expect=lambda rows: len(rows) == 1)
    pg.stop()
    try:
        with proxy.client("sk-restart") as c:
            statuses = [c.post("/v1/chat/completions", json=BODY).status_code for _ in range(6)]
        assert statuses == [200] * 6
        time.sleep(0.5)
        proxy.stop()
        spooled = sum(p.stat().st_size for p in spool_dir.glob("spool-*.jsonl"))
        assert spooled > 0
    finally:
        pg.start()
    restarted = launch("outage-restarted")
    await check_books(restarted, pg, "user:restart-user", 7)
    assert not [p for p in spool_dir.glob("spool-*.jsonl") if p.stat().st_size > 0]
