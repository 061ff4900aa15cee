"""The foundation end to end: the real ``litellm`` proxy with our startup hook, real Postgres and Redis,
the fake provider, the OpenAI SDK as the client."""

from __future__ import annotations

import openai
import pytest
from fastapi import FastAPI
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth
from litellm.proxy.auth.route_checks import RouteChecks
from starlette.requests import Request

from litellm_plugins.core.routes import mount
from tests.support.proxy import MASTER_KEY

ALL_OFF = {cap: {"enabled": False} for cap in ("routing", "byok", "credits", "health")}


@pytest.fixture(scope="module")
def proxy(start_proxy, keys):
    keys.add("sk-core-alice", user_id="alice", team_id="team-a", metadata={"tier": "starter"})
    return start_proxy(plugins=ALL_OFF, name="core")


def sdk(proxy, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)


def test_demo_model_serves_offline_plain_and_streamed(proxy) -> None:
    client = sdk(proxy)
    reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from the litellm-plugins demo model."
    chunks = list(client.chat.completions.create(model="demo", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the litellm-plugins demo model."


def test_provider_model_goes_through_fake_with_platform_key(proxy, fake) -> None:
    client = sdk(proxy)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 40}])
    assert reply.usage.prompt_tokens == 10
    stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            messages=[{"role": "user", "content": "hello"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split() == \
        [f"w{i}" for i in range(8)]
    calls = fake.provider.calls_to("gpt-4o-mini")
    assert [c.stream for c in calls] == [False, True]
    assert {c.authorization for c in calls} == {"Bearer sk-platform-openai"}


def test_ready_reports_services_and_migrations(proxy) -> None:
    with proxy.client() as http:
        body = http.get("/plugins/ready").json()
        assert http.get("/health/liveliness").status_code == 200
    assert body["status"] == "ready"
    assert body["postgres"]["reachable"] and body["redis"]["reachable"]
    assert body["migrations"]["current"] is True and body["migrations"]["pending"] == []


def test_user_routes_accept_plain_keys_and_admin_routes_refuse_them(proxy) -> None:
    with proxy.client("sk-core-alice") as http:
        me = http.get("/plugins/whoami")
        assert me.status_code == 200
        assert me.json() == {"user_id": "alice", "team_id": "team-a", "account": "user:alice",
                             "is_admin": False, "tier": "starter"}
        refused = http.get("/plugins/settings")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["type"] == "permission_denied" and "master key or a proxy_admin key" in error["message"]
    assert set(error) >= {"message", "type", "param", "code"}
    with proxy.client() as http:
        settings = http.get("/plugins/settings")
        assert http.get("/plugins/whoami").json()["is_admin"] is True
        assert http.get("/plugins/whoami", headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
    assert settings.status_code == 200
    body = settings.json()
    assert body["database_url"].startswith("****") and "127.0.0.1" not in body["database_url"]
    assert body["credits"]["enabled"] is False


def test_litellm_route_check_lets_plain_virtual_keys_reach_plugin_routes() -> None:
    """Real virtual keys (not custom_auth) go through LiteLLM's route checks: /plugins/* must pass them."""
    mount(FastAPI(), [])
    token = UserAPIKeyAuth(api_key="hashed", user_id="bob", user_role=LitellmUserRoles.INTERNAL_USER)
    request = Request({"type": "http", "method": "GET", "path": "/plugins/credits/balance", "headers": [],
                       "query_string": b""})
    RouteChecks.non_proxy_admin_allowed_routes_check(
        user_obj=None, _user_role=LitellmUserRoles.INTERNAL_USER, route="/plugins/credits/balance",
        request=request, valid_token=token, request_data={})
    with pytest.raises(Exception, match="(?i)admin"):
        RouteChecks.non_proxy_admin_allowed_routes_check(
            user_obj=None, _user_role=LitellmUserRoles.INTERNAL_USER, route="/config/update",
            request=request, valid_token=token, request_data={})


def test_two_proxies_start_together_on_one_database(start_proxy) -> None:
    first = start_proxy(plugins=ALL_OFF, name="twin-a", wait=False)
    second = start_proxy(plugins=ALL_OFF, name="twin-b", wait=False)
    first.wait_ready()
    second.wait_ready()
    for p in (first, second):
        with p.client() as http:
            assert http.get("/plugins/ready").json()["migrations"]["current"] is True
    first.stop()
    second.stop()


REFUSALS = [
    ({"surprise": True}, {}, "litellm_plugins.surprise: unknown setting", None),
    ({"db_pool_max_size": "lots"}, {}, "litellm_plugins.db_pool_max_size:", None),
    ({"redis_url": "os.environ/LP_NOT_SET_ANYWHERE"}, {},
     "litellm_plugins.redis_url: environment variable LP_NOT_SET_ANYWHERE is not set", None),
    ({}, {"LITELLM_PLUGINS_DATABASE_URL": "postgresql://u:s3cretpw@127.0.0.1:1/x"},
     "cannot connect to Postgres at postgresql://u:***@127.0.0.1:1/x", "s3cretpw"),
    ({}, {"LITELLM_PLUGINS_REDIS_URL": "redis://:r3dispw@127.0.0.1:1/0"},
     "cannot reach Redis at redis://***@127.0.0.1:1/0", "r3dispw"),
]


@pytest.fixture(scope="module")
def refused(start_proxy):
    """Every refusal case's proxy, started at once: each only imports litellm and exits, so running
    them side by side costs about one start instead of five in a row."""
    return [start_proxy(plugins={**ALL_OFF, **plugins}, env=env, name=f"refused{i}", wait=False)
            for i, (plugins, env, _, _) in enumerate(REFUSALS)]


@pytest.mark.parametrize("case", range(len(REFUSALS)), ids=[r[2].split(":")[0] for r in REFUSALS])
def test_startup_refuses_bad_settings_and_unreachable_services(refused, case) -> None:
    _, _, expected, hidden = REFUSALS[case]
    proxy = refused[case]
    assert proxy.wait_exit(timeout=180) == 3
    log = proxy.log_text()
    assert "litellm-plugins: startup refused: " in log and expected in log
    assert "Traceback" not in log
    if hidden:
        assert hidden not in log


async def test_non_object_json_bodies_are_refused_before_litellm_auth() -> None:
    """LiteLLM's auth answers a JSON array with a 500; core refuses it first with a 400 for every route."""
    from litellm.proxy._types import ProxyException

    from litellm_plugins.core.routes import json_object_body

    def request(body: bytes, method: str = "POST") -> Request:
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}
        return Request({"type": "http", "method": method, "path": "/plugins/x", "headers": [],
                        "query_string": b""}, receive)

    for body in (b"[1, 2]", b'"text"', b"{not json", b"\xff\xfe"):
        with pytest.raises(ProxyException) as info:
            await json_object_body(request(body))
        assert info.value.code == "400" and "JSON object" in info.value.message
    assert await json_object_body(request(b'{"ok": true}')) is None
    assert await json_object_body(request(b"")) is None
    assert await json_object_body(request(b"[1]", method="GET")) is None


def test_every_chat_model_group_in_the_catalog_reaches_its_provider(proxy, fake) -> None:
    """Each model group of the shipped catalog, through LiteLLM's real provider adapters (Groq,
    Together, DeepInfra, OpenRouter, Fireworks, vLLM, HuggingFace, OpenAI, …), lands on the fake."""
    import yaml

    from tests.support.proxy import PROXY_CONFIG

    catalog = yaml.safe_load(PROXY_CONFIG.read_text())["model_list"]
    chat_groups = sorted({m["model_name"] for m in catalog
                          if (m.get("model_info") or {}).get("mode", "chat") == "chat"
                          and "mock_response" not in m["litellm_params"]})
    assert len(chat_groups) >= 30
    failures = {}
    with proxy.client(timeout=60) as http:
        for group in chat_groups:
            r = http.post("/v1/chat/completions", json={"model": group, "max_tokens": 4,
                                                        "messages": [{"role": "user", "content": "ping"}]})
            if r.status_code != 200:
                failures[group] = (r.status_code, r.text[:200])
    assert failures == {}
    reached = {c.authorization for c in fake.provider.calls}
    assert all(a and a.startswith("Bearer sk-platform-") for a in reached)
