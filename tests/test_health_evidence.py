"""Health says what it knows (issue 16.6): a deployment nobody probed or called is ``unknown`` with
``null`` uptime, not "healthy, 100%"; every endpoint kind of the shipped catalog is probed (an
OpenAI-compatible local server ``GET /v1/models``, Ollama ``GET /api/tags``) or the API says why not;
routing still uses an unknown deployment."""

from __future__ import annotations

import time

import pytest

from tests.support import proxy as harness
from tests.support.proxy import MASTER_KEY

NO_UPTIME = {"24h": None, "7d": None, "30d": None}


@pytest.fixture(scope="module")
def watched(start_proxy, fake_server):
    model_list = harness.test_config(fake_server.base_url)["model_list"]
    for entry in model_list:
        if entry["model_name"] == "local-llama3-8b":  # Ollama's own wire, as shipped
            entry["litellm_params"] = {**entry["litellm_params"], "model": "ollama_chat/llama3.1:8b",
                                       "api_base": fake_server.base_url.removesuffix("/v1")}
            entry["litellm_params"].pop("custom_llm_provider", None)
            entry["litellm_params"].pop("api_key", None)
    return start_proxy(name="watched", overrides={"model_list": model_list}, plugins={"health": {
        "enabled": True, "probe_interval_s": 1, "lease_ttl_s": 6,
        "probe_exclude_model_groups": ["local-mistral-7b"]}})


def deployments(proxy) -> dict[str, dict]:
    with proxy.client() as http:
        body = http.get("/plugins/health").json()
    return {d["model_group"]: d for p in body["providers"] for d in p["deployments"]}


def wait_for(proxy, predicate, timeout: float = 20.0) -> dict[str, dict]:
    deadline = time.time() + timeout
    while True:
        seen = deployments(proxy)
        if predicate(seen) or time.time() > deadline:
            return seen
        time.sleep(0.3)


def test_every_endpoint_kind_is_probed(watched, fake_server) -> None:
    seen = wait_for(watched, lambda d: all(d[g]["last_probe"] for g in ("local-llama3-8b", "local-qwen-32b")))
    for group in ("local-llama3-8b", "local-qwen-32b", "hf-mistral-7b"):
        d = seen[group]
        assert d["probed"] is True and d["not_probed_reason"] is None, d
    assert fake_server.provider.calls_to(path_suffix="/api/tags"), "Ollama is probed on /api/tags"
    seen = wait_for(watched, lambda d: d["local-llama3-8b"]["probe_samples_24h"] >= 1)
    ollama = seen["local-llama3-8b"]
    assert (ollama["status"], ollama["up"], ollama["last_probe"]["ok"]) == ("healthy", True, True)
    assert ollama["uptime"]["24h"] is not None and ollama["probe_samples_24h"] >= 1


def test_never_probed_never_called_is_unknown_and_routing_still_uses_it(watched) -> None:
    time.sleep(1.5)  # at least one probe round has run since startup
    seen = deployments(watched)
    for group, reason in (("local-mistral-7b", "probe_exclude_model_groups"), ("demo", "mock_response")):
        d = seen[group]
        assert (d["status"], d["up"], d["uptime"], d["probed"]) == ("unknown", None, NO_UPTIME, False), d
        assert reason in d["not_probed_reason"] and d["probe_samples_24h"] == 0
    with watched.client(MASTER_KEY) as http:  # unknown is usable
        reply = http.post("/v1/chat/completions", json={"model": "local-mistral-7b",
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text
    # a traffic outcome is evidence: it says healthy now (its uptime is still not invented)
    after = wait_for(watched, lambda d: d["local-mistral-7b"]["status"] != "unknown", timeout=10)
    assert (after["local-mistral-7b"]["status"], after["local-mistral-7b"]["up"]) == ("healthy", True)
    assert after["local-mistral-7b"]["uptime"] == NO_UPTIME
