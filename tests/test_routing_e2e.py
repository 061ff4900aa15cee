"""Power-level routing end to end: the real proxy, the shipped catalog and policy, the fake provider.

The fake records the upstream model name each call reached, so every assertion is about where a
request really went. Two proxies: ``shipped`` runs proxy_config.yaml's own policy (levels, tiers,
precedence, headers, SDK); ``failing`` runs a small policy with ``allowed_fails: 1`` so fallbacks and
cooldowns can be provoked without disturbing the first one.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from tests.support import proxy as proxy_support
from tests.support.proxy import MASTER_KEY, ProxyProcess

OTHERS_OFF = {"credits": {"enabled": False}, "byok": {"enabled": False}, "health": {"enabled": False}}
HDR_LEVEL, HDR_TIER = "x-litellm-plugins-power-level", "x-litellm-plugins-tier"
HDR_GROUP, HDR_DEGRADED = "x-litellm-plugins-model-group", "x-litellm-plugins-degraded"
MESSAGES = [{"role": "user", "content": "hello there"}]


def upstream_names(base_url: str) -> dict[str, str]:
    """model group -> the model name the fake provider sees for it (from the test config itself)."""
    names = {}
    for entry in proxy_support.test_config(base_url)["model_list"]:
        model = entry["litellm_params"]["model"]
        names[entry["model_name"]] = model.split("/", 1)[1]
    return names


@pytest.fixture(scope="module")
def upstream(fake_server) -> dict[str, str]:
    return upstream_names(fake_server.base_url)


@pytest.fixture(scope="module")
def shipped(start_proxy, keys) -> ProxyProcess:
    keys.add("sk-ent", user_id="ent", metadata={"tier": "enterprise"})
    keys.add("sk-free", user_id="free")  # no tier metadata -> default_tier (free)
    keys.add("sk-starter", user_id="starter", metadata={"tier": "starter"})
    keys.add("sk-pro", user_id="pro", metadata={"tier": "professional"})
    keys.add("sk-pro-key-level", user_id="pk", metadata={"tier": "professional", "power_level": "precision"})
    keys.add("sk-team-level", user_id="tl", team_id="t1",
             team_metadata={"tier": "professional", "power_level": "eco"})
    keys.add("sk-team-tier", user_id="tt", team_id="t2", team_metadata={"tier": "enterprise"})
    keys.add("sk-restricted", user_id="r", metadata={"tier": "enterprise"},
             models=["eco", "auto", "together-llama-3.1-8b", "demo"])
    return start_proxy(plugins=OTHERS_OFF, name="shipped")


def chat(proxy: ProxyProcess, key: str, model: str, headers: dict[str, str] | None = None,
         **body: Any) -> httpx.Response:
    with proxy.client(key) as client:
        return client.post("/v1/chat/completions", headers=headers or {},
                           json={"model": model, "messages": MESSAGES, **body})


def reached(fake) -> list[str | None]:
    return [c.model for c in fake.provider.calls]


# ---- levels, precedence, headers ---------------------------------------------------------------

# the shipped policy's first candidates
FIRST = {"eco": "deepinfra-llama-3.1-8b", "balanced": "gpt-4o-mini", "precision": "claude-sonnet-4"}


@pytest.mark.parametrize("level, group", list(FIRST.items()))
def test_each_level_reaches_its_first_candidate(shipped, fake, upstream, level, group) -> None:
    r = chat(shipped, "sk-ent", level)
    assert r.status_code == 200, r.text
    assert reached(fake) == [upstream[group]], [(c.model, c.status, c.path) for c in fake.provider.calls]
    assert r.headers[HDR_LEVEL] == level
    assert r.headers[HDR_TIER] == "enterprise"
    assert r.headers[HDR_GROUP] == group
    assert r.headers[HDR_DEGRADED] == "false"
    # the fallbacks we hand LiteLLM are routing instructions, never provider parameters
    body = fake.provider.calls[0].body
    for field in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "power_level"):
        assert field not in body


@pytest.mark.parametrize("key, model, headers, body, level", [
    # model name beats everything
    ("sk-pro-key-level", "eco", {"X-Power-Level": "precision"}, {"power_level": "precision"}, "eco"),
    # auto: header > body > key > team > tier default > config default
    ("sk-pro-key-level", "auto", {"X-Power-Level": "balanced"}, {"power_level": "eco"}, "balanced"),
    ("sk-pro-key-level", "auto", {}, {"power_level": "balanced"}, "balanced"),
    ("sk-pro-key-level", "auto", {}, {}, "precision"),
    ("sk-team-level", "auto", {}, {}, "eco"),
    ("sk-pro", "auto", {}, {}, "balanced"),           # professional tier's default_level
    ("sk-free", "auto", {}, {}, "eco"),               # free tier's default_level
], ids=["model", "header", "body", "key", "team", "tier-default", "free-default"])
def test_level_precedence(shipped, fake, upstream, key, model, headers, body, level) -> None:
    r = chat(shipped, key, model, headers=headers, **body)
    assert r.status_code == 200, r.text
    assert r.headers[HDR_LEVEL] == level
    assert reached(fake) == [upstream[FIRST[level]]]
    assert "power_level" not in fake.provider.calls[0].body  # removed before the provider sees it


def test_tier_comes_from_team_metadata_then_default(shipped, fake) -> None:
    assert chat(shipped, "sk-team-tier", "precision").headers[HDR_TIER] == "enterprise"
    r = chat(shipped, "sk-free", "eco")
    assert r.status_code == 200 and r.headers[HDR_TIER] == "free"


def test_custom_model_goes_where_named(shipped, fake, upstream) -> None:
    r = chat(shipped, "sk-pro", "claude-3.7-sonnet")
    assert r.status_code == 200, r.text
    assert reached(fake) == [upstream["claude-3.7-sonnet"]]
    assert (r.headers[HDR_LEVEL], r.headers[HDR_GROUP]) == ("custom", "claude-3.7-sonnet")


def test_tier_refusals(shipped, fake) -> None:
    r = chat(shipped, "sk-free", "precision")
    assert r.status_code == 403, r.text
    assert r.json()["error"]["message"] == ("power level 'precision' is not allowed for tier 'free'; "
                                            "tiers that allow it: professional, enterprise")
    r = chat(shipped, "sk-starter", "auto", headers={"X-Power-Level": "precision"})
    assert r.status_code == 403 and "tier 'starter'" in r.json()["error"]["message"]
    r = chat(shipped, "sk-pro", "claude-opus-4")
    assert r.status_code == 403
    assert r.json()["error"]["message"] == ("model 'claude-opus-4' is not allowed for tier 'professional'; "
                                            "tiers that allow it: enterprise")
    r = chat(shipped, "sk-free", "gpt-4o", stream=True)
    assert r.status_code == 403 and "tiers that allow it: professional, enterprise" in r.text
    assert reached(fake) == []


def test_unknown_level_is_400_listing_valid_levels(shipped, fake) -> None:
    r = chat(shipped, "sk-ent", "auto", headers={"X-Power-Level": "turbo"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "unknown power level 'turbo'" in error["message"]
    assert "valid power levels: eco, balanced, precision" in error["message"]
    r = chat(shipped, "sk-ent", "auto", power_level="ultra")
    assert r.status_code == 400 and "'ultra'" in r.json()["error"]["message"]
    assert reached(fake) == []


def test_key_models_are_enforced_on_the_routed_target(shipped, fake, upstream) -> None:
    r = chat(shipped, "sk-restricted", "eco")
    assert r.status_code == 200, r.text
    assert reached(fake) == [upstream["together-llama-3.1-8b"]]  # deepinfra/groq are not on the key
    r = chat(shipped, "sk-restricted", "balanced")
    assert r.status_code == 403 and "this key may not use any model of power level 'balanced'" in r.text


def test_client_fallbacks_cannot_escape_the_tier(shipped, fake, upstream) -> None:
    fake.provider.fail(500, models={upstream["local-qwen-32b"]}, times=2)
    r = chat(shipped, "sk-free", "local-qwen-32b", fallbacks=["claude-opus-4"])
    assert upstream["claude-opus-4"] not in reached(fake)
    assert r.status_code >= 500


def test_master_key_quick_start_demo_and_levels(shipped, fake, upstream) -> None:
    r = chat(shipped, MASTER_KEY, "demo")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from the litellm-plugins demo model."
    assert r.headers[HDR_TIER] == "enterprise"  # admin_tier
    r = chat(shipped, MASTER_KEY, "precision")
    assert r.status_code == 200 and reached(fake)[-1] == upstream["claude-sonnet-4"]


def test_text_completion_routes_and_embeddings_pass_through(shipped, fake, upstream) -> None:
    with shipped.client("sk-ent") as client:
        r = client.post("/v1/completions", json={"model": "eco", "prompt": "say hi", "power_level": "x"})
        assert r.status_code == 200, r.text
        assert r.headers[HDR_LEVEL] == "eco"
        assert fake.provider.calls[-1].path.endswith("/completions")
        assert fake.provider.calls[-1].model == upstream[FIRST["eco"]]
        assert "power_level" not in fake.provider.calls[-1].body
        r = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"})
        assert r.status_code == 200, r.text
        assert HDR_LEVEL not in r.headers
        assert fake.provider.calls[-1].model == upstream["text-embedding-3-small"]
        r = client.post("/v1/embeddings", json={"model": "eco", "input": "hi"})
        assert r.status_code == 400 and "power levels apply to /v1/chat/completions" in r.text


def test_openai_sdk_with_eco_streamed_and_not(shipped, fake, upstream) -> None:
    client = openai.OpenAI(api_key="sk-free", base_url=shipped.url + "/v1", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="eco", messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers[HDR_LEVEL] == "eco" and raw.headers[HDR_GROUP] == FIRST["eco"]
    with client.chat.completions.with_streaming_response.create(
            model="eco", messages=MESSAGES, stream=True) as response:
        assert response.headers[HDR_LEVEL] == "eco"
        assert response.headers[HDR_GROUP] == FIRST["eco"]
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    assert text.strip()
    assert reached(fake) == [upstream[FIRST["eco"]]] * 2
    assert fake.provider.calls[1].stream
    with pytest.raises(openai.PermissionDeniedError, match="tiers that allow it"):
        client.chat.completions.create(model="precision", messages=MESSAGES, stream=True)


# ---- failures: fallbacks, cooldown, 503 -------------------------------------------------------

FAILING_POLICY = {
    "levels": {
        "eco": ["together-qwen-2.5-7b", "deepinfra-llama-3.1-8b"],
        "balanced": ["together-llama-3.1-8b", "deepinfra-mistral-7b"],
        "precision": ["gpt-4o-mini", "gpt-4o", "claude-opus-4"],
        "solo": ["claude-sonnet-4"],
    },
    "tiers": {
        "enterprise": {"levels": ["eco", "balanced", "precision", "solo"], "default_level": "eco",
                       "models": ["*"]},
        "basic": {"levels": ["precision"], "models": []},
    },
    "default_tier": "enterprise",
    "default_level": "eco",
}


@pytest.fixture(scope="module")
def failing(start_proxy, keys) -> ProxyProcess:
    keys.add("sk-fail-ent", user_id="fe", metadata={"tier": "enterprise"})
    keys.add("sk-fail-basic", user_id="fb", metadata={"tier": "basic"})
    # allowed_fails 1, also as a per-exception policy: LiteLLM 1.108 never cools down the only
    # deployment of a group on allowed_fails alone; the policy makes 1.102.4 and 1.108.7 both cool
    # it down after the second failure (docs/litellm.md fact 24)
    policy = {f"{kind}ErrorAllowedFails": 1 for kind in (
        "Authentication", "Timeout", "RateLimit", "InternalServer", "ServiceUnavailable", "BadGateway")}
    overrides = {"router_settings": {"num_retries": 1, "allowed_fails": 1, "cooldown_time": 60,
                                     "allowed_fails_policy": policy}}
    return start_proxy(plugins={**OTHERS_OFF, "routing": FAILING_POLICY}, overrides=overrides, name="failing")


def test_fallback_to_next_candidate_on_5xx(failing, fake, upstream) -> None:
    fake.provider.fail(503, models={upstream["together-qwen-2.5-7b"]})
    r = chat(failing, "sk-fail-ent", "eco")
    assert r.status_code == 200, r.text
    calls = reached(fake)
    assert calls[0] == upstream["together-qwen-2.5-7b"] and calls[-1] == upstream["deepinfra-llama-3.1-8b"]
    assert r.headers[HDR_GROUP] == "deepinfra-llama-3.1-8b"
    assert r.headers[HDR_LEVEL] == "eco"


def test_fallback_to_next_candidate_on_timeout(failing, fake, upstream) -> None:
    # the fallback answers after the 1-s timeout and LiteLLM's retry handling: 4.2 s measured alone,
    # 5.1 s once in a busy full run; the slow deployment answers after 8 s, so < 7 s proves that
    # nobody waited for it
    fake.provider.set_delay(8.0, upstream["together-llama-3.1-8b"])
    started = time.monotonic()
    r = chat(failing, "sk-fail-ent", "balanced", timeout=1)
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 7
    assert r.headers[HDR_GROUP] == "deepinfra-mistral-7b"
    assert reached(fake) == [upstream["deepinfra-mistral-7b"]]
    # the fake records a call when it answers: the abandoned slow attempt shows up after its delay
    deadline = time.monotonic() + 10
    while upstream["together-llama-3.1-8b"] not in reached(fake) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert upstream["together-llama-3.1-8b"] in reached(fake)


def test_fallbacks_never_leave_the_tier(failing, fake, upstream) -> None:
    # basic may use precision's candidates only; claude-opus-4 is precision's third candidate, fine;
    # but an enterprise-only model named by the client as a fallback is dropped.
    fake.provider.fail(500, models={upstream["gpt-4o-mini"], upstream["gpt-4o"], upstream["claude-opus-4"]})
    r = chat(failing, "sk-fail-basic", "precision", fallbacks=["together-qwen-2.5-7b"])
    assert r.status_code >= 500
    calls = reached(fake)
    assert upstream["together-qwen-2.5-7b"] not in calls  # the client's fallback was dropped
    # ...while the level's own candidates were all tried, in order
    tried = [c for c in calls if c in {upstream["gpt-4o-mini"], upstream["gpt-4o"], upstream["claude-opus-4"]}]
    assert [tried[0], tried[-1]] == [upstream["gpt-4o-mini"], upstream["claude-opus-4"]]
    assert upstream["gpt-4o"] in tried


def test_cooled_down_candidate_is_skipped(failing, fake, upstream) -> None:
    # test_fallbacks_never_leave_the_tier left gpt-4o-mini, gpt-4o and claude-opus-4 cooling down
    # (allowed_fails: 1): start from a fresh level instead, so this test stands alone.
    fake.provider.fail(500, models={upstream["together-qwen-2.5-7b"]})
    chat(failing, "sk-fail-ent", "eco")  # first candidate: cooling from the 5xx test, or now
    fake.provider.reset()
    r = chat(failing, "sk-fail-ent", "eco")
    assert r.status_code == 200, r.text
    # routing chose the healthy candidate itself: no call to the cooled one, no LiteLLM fallback hop
    assert reached(fake) == [upstream["deepinfra-llama-3.1-8b"]]
    assert r.headers[HDR_GROUP] == "deepinfra-llama-3.1-8b"
    assert r.headers.get("x-litellm-attempted-fallbacks") in (None, "0")


def test_all_candidates_unhealthy_is_503_with_retry_after(failing, fake, upstream) -> None:
    fake.provider.fail(500, models={upstream["claude-sonnet-4"]})
    for _ in range(2):  # allowed_fails: 1 -> the second failure this minute starts a cooldown
        assert chat(failing, "sk-fail-ent", "solo").status_code >= 500
    fake.provider.reset()
    r = chat(failing, "sk-fail-ent", "solo")
    assert r.status_code == 503, r.text
    assert 1 <= int(r.headers["retry-after"]) <= 60
    error = r.json()["error"]
    assert "no healthy model for power level 'solo'" in error["message"]
    assert reached(fake) == []
    r = chat(failing, "sk-fail-ent", "solo", stream=True)
    assert r.status_code == 503 and "retry-after" in r.headers


def test_policy_route_shows_the_callers_own_tier(shipped) -> None:
    with shipped.client("sk-free") as client:
        body = client.get("/plugins/routing/policy").json()
        assert body["tier"] == "free" and list(body["levels"]) == ["eco"]
        assert body["default_level"] == "eco"
        eco = body["levels"]["eco"]["candidates"]
        assert eco[0] == {"model_group": FIRST["eco"], "available": True, "allowed_for_key": True,
                          "retry_after_s": None, "byok_only": False}
        assert client.get("/plugins/routing/policy", params={"tier": "enterprise"}).status_code == 403
    with shipped.client(MASTER_KEY) as client:
        body = client.get("/plugins/routing/policy", params={"tier": "professional"}).json()
        assert list(body["levels"]) == ["eco", "balanced", "precision"] and "claude-opus-4" not in body["models"]
        assert client.get("/plugins/routing/policy", params={"tier": "gold"}).status_code == 404

