"""Provider health end to end: two real proxies sharing Postgres + Redis, a fake provider that fails
and goes down. Bounds asserted here (test settings: threshold 3, cool-down 2 s, probes every 1 s,
refresh 0.2 s, lease 3 s):

* a failing deployment stops getting traffic after at most ``failure_threshold`` + 2 failed requests
  (and within 6 s on this loaded 2-core machine), on both proxies;
* it gets traffic again within cool-down + 3 s of the provider recovering;
* a provider that goes down with no traffic is marked down by the probes within 2 rounds + 5 s;
* a dead prober is replaced within ``lease_ttl_s`` + 3 s.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.proxy import MASTER_KEY, ROOT

THRESHOLD = 3
COOLDOWN_S = 6.0
LEASE_S = 3.0
HEALTH = {
    "enabled": True, "probe_interval_s": 1.0, "probe_timeout_s": 1.0, "probe_failure_threshold": 2,
    "lease_ttl_s": LEASE_S, "failure_threshold": THRESHOLD, "cooldown_s": COOLDOWN_S,
    "refresh_interval_s": 0.2,
}
USER = "sk-health-user"


def _models(base_url: str) -> list[dict[str, Any]]:
    def dep(group: str, model: str, key: str) -> dict[str, Any]:
        return {"model_name": group, "litellm_params": {"model": f"openai/{model}", "api_base": base_url,
                                                        "api_key": key}}
    return [dep("hgroup", "h-primary", "sk-platform-openai"), dep("hgroup", "h-secondary", "sk-platform-openai"),
            dep("hsolo", "h-solo", "sk-platform-solo")]


@pytest.fixture(scope="module")
def proxies(start_proxy, fake_server, keys):
    keys.add(USER, user_id="hal", models=[])
    overrides = {"model_list": _models(fake_server.base_url),
                 "router_settings": {"num_retries": 0, "disable_cooldowns": True, "allowed_fails": 1000}}
    plugins = {"health": HEALTH, "routing": {"enabled": False}, "byok": {"enabled": False},
               "credits": {"enabled": False}}
    a = start_proxy(plugins=plugins, overrides=overrides, name="health_a", wait=False)
    b = start_proxy(plugins=plugins, overrides=overrides, name="health_b", wait=False)
    a.wait_ready()   # booted together: each boot is one CPU-bound import of litellm, and there are two cores
    b.wait_ready()
    return a, b


def _chat(proxy, model: str = "hgroup", key: str = USER) -> httpx.Response:
    with proxy.client(key) as client:
        return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def _health(proxy, key: str = MASTER_KEY) -> dict[str, Any]:
    with proxy.client(key) as client:
        response = client.get("/plugins/health")
    assert response.status_code == 200, response.text
    return response.json()


def _deployments(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """upstream model name (h-primary...) -> deployment entry."""
    return {d["model"].split("/", 1)[1]: d for p in body["providers"] for d in p["deployments"]}


def _excluded(proxy, name: str) -> bool:
    """Whether ``proxy``'s own in-memory view drops this deployment now."""
    return _deployments(_health(proxy))[name]["excluded_from_routing"]


def _wait(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def _served(fake, since: int) -> list[str | None]:
    return [c.model for c in fake.provider.calls[since:] if c.path.endswith("/chat/completions")]


async def _db(module_database: str):
    return await asyncpg.connect(module_database, server_settings={"search_path": "litellm_plugins"})


def test_litellm_health_endpoints_keep_working(proxies, fake):
    a, _ = proxies
    assert httpx.get(a.url + "/health/liveliness").status_code == 200
    assert httpx.get(a.url + "/health/readiness").status_code == 200
    with a.client() as client:
        response = client.get("/health", params={"model": "hgroup"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["healthy_count"] == 2
    ready = httpx.get(a.url + "/plugins/ready").json()
    assert ready["tasks"]["health.refresher"]["running"] and ready["tasks"]["health.prober"]["running"]


def test_health_api_for_users_and_admins(proxies, fake):
    a, _ = proxies
    # wait for a probe round so every field is populated
    _wait(lambda: all(d["last_probe"] and d["latency_p50_ms"] is not None
                      for d in _deployments(_health(a)).values()), 12, 0.5)
    with a.client(USER) as client:
        response = client.get("/plugins/health")
    assert response.status_code == 200
    assert "sk-platform" not in response.text and "Bearer" not in response.text
    user_view = response.json()
    assert "prober" not in user_view
    deps = _deployments(user_view)
    assert set(deps) == {"h-primary", "h-secondary", "h-solo"}
    primary = deps["h-primary"]
    assert primary["status"] == "healthy" and primary["up"] and not primary["excluded_from_routing"]
    assert primary["model_group"] == "hgroup" and "endpoint" not in primary
    assert primary["uptime"]["24h"] == 100.0 and primary["last_probe"]["ok"] is True
    assert primary["latency_p50_ms"] is not None and primary["latency_p95_ms"] >= primary["latency_p50_ms"]
    admin_view = _health(a)
    assert admin_view["prober"]["holder"]
    assert _deployments(admin_view)["h-primary"]["endpoint"].startswith("http://127.0.0.1:")
    assert "sk-platform" not in str(admin_view)
    with a.client("sk-nobody") as client:
        assert client.get("/plugins/health").status_code == 401
    # filter by model group
    with a.client(USER) as client:
        only = client.get("/plugins/health", params={"model_group": "hsolo"}).json()
    assert set(_deployments(only)) == {"h-solo"}


async def test_failing_deployment_loses_traffic_on_both_proxies_and_returns(proxies, fake, module_database):
    a, b = proxies
    primary_id = _deployments(_health(a))["h-primary"]["model_id"]
    fake.provider.fail(500, models={"h-primary"})
    started = time.monotonic()
    failures = 0
    for _ in range(40):
        response = await asyncio.to_thread(_chat, a)
        if response.status_code != 200:
            failures += 1
        if _deployments(_health(a))["h-primary"]["status"] == "down":
            break
    opened_after = time.monotonic() - started
    assert failures <= THRESHOLD + 2, failures
    assert opened_after < 6.0, opened_after
    _wait(lambda: _excluded(b, "h-primary"), 2.0)  # B follows through Redis (refresh 0.2 s)
    mark = len(fake.provider.calls)
    for proxy in (a, b) * 4:
        assert (await asyncio.to_thread(_chat, proxy)).status_code == 200
    assert _served(fake, mark) == ["h-secondary"] * 8
    for proxy in (a, b):
        entry = _deployments(_health(proxy))["h-primary"]
        assert entry["status"] == "down" and entry["excluded_from_routing"] is True
        assert entry["reason"] == "traffic: HTTP 500 (InternalServerError)", entry["reason"]
        assert entry["error_rate"] > 0

    # the provider recovers: after the cool-down a trial request reaches it and closes the circuit
    fake.provider.clear_failures()
    recovered_at = time.monotonic()
    mark = len(fake.provider.calls)

    def primary_served_again() -> bool:
        assert _chat(a).status_code == 200
        return "h-primary" in _served(fake, mark) and \
            _deployments(_health(b))["h-primary"]["status"] == "healthy"

    _wait(primary_served_again, COOLDOWN_S + 3.0, interval=0.1)
    assert time.monotonic() - recovered_at < COOLDOWN_S + 3.0

    conn = await _db(module_database)
    try:
        rows = await conn.fetch("SELECT state, up, reason FROM health_events WHERE model_id = $1 ORDER BY id",
                                primary_id)
    finally:
        await conn.close()
    states = [r["state"] for r in rows]
    assert states[0] == "closed" and rows[0]["reason"] == "first seen"
    assert "open" in states and states[-1] == "closed" and rows[-1]["up"]
    assert [r["up"] for r in rows if r["state"] == "open"] == [False] * states.count("open")


def test_provider_down_is_seen_by_probes_and_requests_are_not_black_holed(proxies, fake):
    a, b = proxies
    fake.down()
    started = time.monotonic()
    _wait(lambda: all(d["status"] == "down" for d in _deployments(_health(a)).values()), 2 * 1.0 + 5.0, 0.1)
    assert time.monotonic() - started < 7.0
    entry = _deployments(_health(b))["h-secondary"]
    assert entry["reason"].startswith("probe: ") and entry["last_probe"]["ok"] is False
    # every deployment of the group is open, in B's own view too: the filter keeps them rather than
    # fail the request
    _wait(lambda: _excluded(b, "h-primary") and _excluded(b, "h-secondary"), 2.0)
    fake.up()
    assert _chat(b).status_code == 200
    # probes bring everything back without traffic (hsolo gets none)
    _wait(lambda: all(d["status"] == "healthy" for d in _deployments(_health(a)).values()),
          COOLDOWN_S + 1.0 + 3.0, 0.1)


async def test_admin_force_down_and_up_is_audited(proxies, fake, module_database):
    a, b = proxies
    deps = _deployments(_health(a))
    secondary_id = deps["h-secondary"]["model_id"]
    path = f"/plugins/health/deployments/{secondary_id}/force"
    with a.client(USER) as client:
        assert client.post(path, json={"state": "down", "reason": "x"}).status_code == 403
    with a.client() as client:
        bad = client.post(path, json={"state": "sideways", "reason": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "state"
        assert client.post(path, json={"state": "down"}).status_code == 400
        assert client.post(path, content=b"not json").status_code == 400
        assert client.post("/plugins/health/deployments/nope/force",
                           json={"state": "down", "reason": "x"}).status_code == 404
        forced = client.post(path, json={"state": "down", "reason": "provider maintenance"})
    assert forced.status_code == 200, forced.text
    assert forced.json()["status"] == "forced_down" and forced.json()["reason"] == "provider maintenance"
    _wait(lambda: _excluded(b, "h-secondary"), 2.0)
    mark = len(fake.provider.calls)
    for proxy in (a, b) * 5:
        assert (await asyncio.to_thread(_chat, proxy)).status_code == 200
    assert _served(fake, mark) == ["h-primary"] * 10
    entry = _deployments(_health(b))["h-secondary"]
    assert entry["status"] == "forced_down" and entry["forced"]["by"] == "proxy-admin"
    assert entry["excluded_from_routing"] is True

    # forcing the only deployment of a group down refuses its traffic (no silent keep-all)
    solo_id = deps["h-solo"]["model_id"]
    with a.client() as client:
        assert client.post(f"/plugins/health/deployments/{solo_id}/force",
                           json={"state": "down", "reason": "retired"}).status_code == 200
    await asyncio.sleep(0.3)
    solo = await asyncio.to_thread(_chat, a, "hsolo")
    assert solo.status_code == 503, solo.text
    assert "forced down" in solo.json()["error"]["message"]
    assert not [c for c in fake.provider.calls[mark:] if c.model == "h-solo"]

    with a.client() as client:
        for model_id in (secondary_id, solo_id):
            back = client.post(f"/plugins/health/deployments/{model_id}/force",
                               json={"state": "auto", "reason": "done"})
            assert back.status_code == 200 and back.json()["status"] == "healthy"
        audit = client.get("/plugins/health/audit", params={"model_id": secondary_id}).json()["entries"]
    assert [(e["action"], e["reason"], e["actor"]) for e in audit] == [
        ("auto", "done", "proxy-admin"), ("force_down", "provider maintenance", "proxy-admin")]
    with a.client(USER) as client:
        assert client.get("/plugins/health/audit").status_code == 403
    _wait(lambda: not _excluded(b, "h-secondary"), 2.0)
    mark = len(fake.provider.calls)
    for _ in range(12):
        assert (await asyncio.to_thread(_chat, b)).status_code == 200
    assert "h-secondary" in _served(fake, mark)
    conn = await _db(module_database)
    try:
        states = [r["state"] for r in await conn.fetch(
            "SELECT state FROM health_events WHERE model_id = $1 ORDER BY id", secondary_id)]
    finally:
        await conn.close()
    assert states[-2:] == ["forced_down", "closed"]


def test_cli_health_show(proxies, fake):
    a, _ = proxies
    ids = {d["model_id"] for d in _deployments(_health(a)).values()}
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(a.env)
    result = subprocess.run([sys.executable, "-m", "litellm_plugins.cli", "--config", str(a.config_path),
                             "health", "show", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "sk-platform" not in result.stdout
    import json
    body = json.loads(result.stdout)
    assert {d["model_id"] for p in body["providers"] for d in p["deployments"]} == ids
    assert all(d["uptime"]["24h"] is not None for p in body["providers"] for d in p["deployments"])
    from litellm_plugins.health.cli import _table
    table = _table(body)  # the default (table) rendering of the same document
    assert "hgroup" in table and "hsolo" in table and f"prober: {body['prober']['holder']}" in table


def test_client_metadata_cannot_hide_failures(proxies, fake):
    """``byok_used`` in the request body's metadata must not make platform failures invisible."""
    a, _ = proxies
    fake.provider.fail(500, models={"h-solo"})
    for _ in range(THRESHOLD):
        with a.client(USER) as client:
            response = client.post("/v1/chat/completions", json={
                "model": "hsolo", "messages": [{"role": "user", "content": "hi"}],
                "metadata": {"litellm_plugins": {"byok_used": True}}})
        assert response.status_code == 500
    _wait(lambda: _deployments(_health(a))["h-solo"]["status"] == "down", 2.0)


async def test_one_prober_at_a_time_and_takeover(proxies, fake, module_database):
    a, b = proxies
    holder = _health(a)["prober"]["holder"]
    assert _health(b)["prober"]["holder"] == holder
    fake.provider.calls.clear()
    await asyncio.sleep(3.2)
    probes = [c for c in fake.provider.calls if c.path.endswith("/models")]
    # 2 probe targets (two keys) per round, one round per second, by ONE prober: ~6, never ~12
    assert 2 <= len(probes) <= 2 * 5, len(probes)
    conn = await _db(module_database)
    try:
        probers = await conn.fetch("SELECT DISTINCT prober FROM health_probes WHERE at > now() - interval '3 seconds'")
        assert [r["prober"] for r in probers] == [holder]
        # kill the holder's process group as a crash would: the other proxy takes over
        pid = int(holder.split(":")[1])
        victim, survivor = (a, b) if pid == a.process.pid else (b, a)
        assert pid == victim.process.pid, "prober token should carry the proxy's pid"
        victim.kill()
        killed = time.monotonic()

        def new_holder() -> str | None:
            current = _health(survivor)["prober"]["holder"]
            return current if current and current != holder else None

        taken = _wait(new_holder, LEASE_S + 3.0, 0.2)
        assert time.monotonic() - killed < LEASE_S + 3.0
        await asyncio.sleep(1.5)
        fresh = await conn.fetch("SELECT DISTINCT prober FROM health_probes WHERE at > now() - interval '1 second'")
        assert [r["prober"] for r in fresh] == [taken]
    finally:
        await conn.close()
