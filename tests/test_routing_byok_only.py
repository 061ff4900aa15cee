"""A fresh machine: the shipped catalog with no provider key and no local server set (issue 16.5).

Every deployment whose ``os.environ/`` setting is unset is BYOK-only (key unset) or unconfigured
(``api_base`` unset): routing skips it for callers without their own key for its provider -- no time
spent on it, nothing sent to the provider -- and still offers it to callers who have one.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support import proxy as harness
from tests.support.proxy import MASTER_KEY

MIXED_GROUP = "together-qwen-2.5-7b"  # in no power level: named directly by the master key
MIXED_KEY = "sk-platform-together-mixed"
USER_GROQ_KEY = "sk-user-own-groq-key-0001"


@pytest.fixture(scope="module")
def fresh(start_proxy, keys, fake_server):
    keys.add("sk-fresh-free", user_id="fresh-free")                                   # tier free: eco
    keys.add("sk-fresh-starter", user_id="fresh-starter", metadata={"tier": "starter"})  # eco, balanced
    keys.add("sk-fresh-byok", user_id="fresh-byok", metadata={"tier": "starter"})
    model_list = harness.test_config(fake_server.base_url, platform_keys=False)["model_list"]
    # One group with a platform-keyed deployment next to its keyless one (the key is a literal).
    model_list.append({"model_name": MIXED_GROUP, "litellm_params": {
        "model": "together_ai/mixed-qwen", "api_key": MIXED_KEY, "api_base": fake_server.base_url,
        "input_cost_per_token": 0.0000003, "output_cost_per_token": 0.0000003}})
    return start_proxy(name="fresh", overrides={"model_list": model_list},
                       plugins={"health": {"enabled": True, "probe_interval_s": 1, "lease_ttl_s": 6}},
                       env={"VLLM_API_BASE": "", "OLLAMA_API_BASE": ""})


def chat(proxy, key: str, model: str, **extra) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    with proxy.client(key) as http:
        response = http.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hello"}], **extra})
    return response, time.perf_counter() - started


def test_startup_logs_one_line_listing_them(fresh) -> None:
    lines = [line for line in fresh.log_text().splitlines() if "are BYOK-only" in line]
    assert len(lines) == 1, lines
    assert "groq-llama-3.1-8b (GROQ_API_KEY)" in lines[0] and "local-llama3-8b (OLLAMA_API_BASE)" in lines[0]
    assert "demo" not in lines[0].split(": ", 2)[-1].split(", ")  # the mock needs nothing


def test_eco_answers_from_demo_at_once_without_calling_a_keyless_deployment(fresh, fake) -> None:
    chat(fresh, "sk-fresh-free", "demo")  # warm the proxy's first-request paths
    timings = []
    for _ in range(3):
        response, elapsed = chat(fresh, "sk-fresh-free", "eco")
        assert response.status_code == 200, response.text
        assert response.headers["x-litellm-plugins-model-group"] == "demo"
        assert response.json()["choices"][0]["message"]["content"] == "Hello from the litellm-plugins demo model."
        timings.append(elapsed)
    assert min(timings) < 1.0 and max(timings) < 3.0, timings  # before: 11 s on a fresh machine
    time.sleep(2.5)  # two probe rounds: a BYOK-only deployment is not probed with a missing key either
    probes = [c for c in fake.provider.calls if c.authorization == f"Bearer {MIXED_KEY}"]
    assert probes and {c.path for c in probes} == {"/v1/models"}  # the prober runs: keyed ones only
    assert [c for c in fake.provider.calls if c not in probes] == []


def test_a_level_with_only_keyless_candidates_is_a_fast_clear_503(fresh, fake) -> None:
    response, elapsed = chat(fresh, "sk-fresh-starter", "balanced")
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert "own provider key" in error["message"] and "gpt-4o-mini" in error["message"]
    assert "retry-after" not in response.headers  # waiting does not help
    assert elapsed < 3.0
    named, _ = chat(fresh, MASTER_KEY, "gpt-4o")  # a custom model that is BYOK-only
    assert named.status_code == 503 and "own provider key" in named.json()["error"]["message"]
    with fresh.client() as http:  # an unrouted call: the router filter answers, at once
        embedding = http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert embedding.status_code >= 400 and "not configured on this proxy" in embedding.text
    assert [c for c in fake.provider.calls if c.path != "/v1/models"] == []


def test_mixed_group_serves_platform_callers_from_its_keyed_deployment_only(fresh, fake) -> None:
    for _ in range(6):
        response, _ = chat(fresh, MASTER_KEY, MIXED_GROUP)
        assert response.status_code == 200, response.text
        # first try: the keyless deployment was never attempted (it used to fail locally, then retry)
        assert response.headers.get("x-litellm-attempted-retries") == "0"
        assert response.headers.get("x-litellm-attempted-fallbacks", "0") == "0"
    served = fake.provider.calls_to(path_suffix="/chat/completions")
    assert len(served) == 6 and {c.model for c in served} == {"mixed-qwen"}  # never Qwen2.5-7B-Instruct-Turbo
    assert {c.authorization for c in served} == {f"Bearer {MIXED_KEY}"}


def test_a_caller_with_their_own_key_is_served_by_the_keyless_deployment(fresh, fake) -> None:
    with fresh.client("sk-fresh-byok") as http:
        added = http.post("/plugins/byok/keys", json={"provider": "groq", "key": USER_GROQ_KEY})
        assert added.status_code in (200, 201), added.text
        policy = http.get("/plugins/routing/policy").json()
    eco = {c["model_group"]: c for c in policy["levels"]["eco"]["candidates"]}
    assert eco["groq-llama-3.1-8b"] == {**eco["groq-llama-3.1-8b"], "available": True, "byok_only": True,
                                        "byok_providers": ["groq"]}
    assert eco["deepinfra-llama-3.1-8b"]["available"] is False
    fake.provider.reset()
    response, _ = chat(fresh, "sk-fresh-byok", "eco")
    assert response.status_code == 200, response.text
    assert response.headers["x-litellm-plugins-model-group"] == "groq-llama-3.1-8b"
    assert response.headers["x-litellm-plugins-byok"] == "true"
    calls = fake.provider.calls_to("llama-3.1-8b-instant")
    assert [c.authorization for c in calls] == [f"Bearer {USER_GROQ_KEY}"]
    # nobody else is routed there
    other, _ = chat(fresh, "sk-fresh-free", "eco")
    assert other.headers["x-litellm-plugins-model-group"] == "demo"
    assert len(fake.provider.calls_to("llama-3.1-8b-instant")) == 1


def test_policy_and_health_say_byok_only(fresh) -> None:
    with fresh.client("sk-fresh-free") as http:
        policy = http.get("/plugins/routing/policy").json()
        health = http.get("/plugins/health").json()
    eco = {c["model_group"]: c for c in policy["levels"]["eco"]["candidates"]}
    assert eco["deepinfra-llama-3.1-8b"]["byok_only"] is True and eco["deepinfra-llama-3.1-8b"]["available"] is False
    assert eco["local-llama3-8b"]["byok_only"] is True and eco["local-llama3-8b"]["byok_providers"] == []
    assert eco["demo"] == {**eco["demo"], "byok_only": False, "available": True}
    deployments = {d["model_group"]: d for p in health["providers"] for d in p["deployments"]}
    groq = deployments["groq-llama-3.1-8b"]
    assert (groq["status"], groq["up"], groq["byok_only"], groq["probed"], groq["missing_settings"]) == \
        ("byok_only", None, True, False, ["GROQ_API_KEY"])
    assert groq["uptime"] == {"24h": None, "7d": None, "30d": None} and "GROQ_API_KEY" in groq["not_probed_reason"]
    local = deployments["local-llama3-8b"]
    assert (local["status"], local["byok_only"], local["missing_settings"]) == \
        ("unconfigured", False, ["OLLAMA_API_BASE"])
    assert {p["provider"]: p["status"] for p in health["providers"]}["groq"] == "byok_only"
