"""Capability-aware routing (issue 8): a power level never sends a request to a model that cannot serve it.

Unit tests of needs/offers, then two real proxies: ``shipped`` (proxy_config.yaml's own policy, with
``escalate_for_capability: true``) and ``strict`` (a small eco level of mixed models, escalation off).
"""

from __future__ import annotations

from typing import Any

import pytest

from litellm_plugins.routing.capabilities import (AUDIO, REASONING, SCHEMA, TOOLS, VISION, Needs,
                                                  missing, needs_of, offers_from_config)
from tests.support.proxy import ProxyProcess
from tests.test_routing_e2e import (HDR_GROUP, HDR_LEVEL, OTHERS_OFF, chat, reached,  # noqa: F401
                                    upstream)

HDR_ESCALATED = "x-litellm-plugins-escalated"
IMAGE = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
TOOLS_SPEC = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
LONG = [{"role": "user", "content": "lorem ipsum " * 15_000}]  # 180k characters: ~60k tokens


# ---- unit -------------------------------------------------------------------------------------------

def test_needs_are_read_from_the_request() -> None:
    assert needs_of({"messages": [{"role": "user", "content": "hi"}]}, 3.0) == Needs(frozenset(), 1, None)
    assert needs_of({"messages": IMAGE}, 3.0).caps == {VISION}
    assert needs_of({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]}, 3.0).caps == {AUDIO}
    assert needs_of({"messages": [], "tools": TOOLS_SPEC}, 3.0).caps == {TOOLS}
    assert needs_of({"messages": [], "functions": [{"name": "f"}]}, 3.0).caps == {TOOLS}
    assert needs_of({"messages": [], "response_format": {"type": "json_schema", "json_schema": {}}}, 3.0).caps \
        == {SCHEMA}
    assert needs_of({"messages": [], "response_format": {"type": "json_object"}}, 3.0).caps == frozenset()
    assert needs_of({"messages": [], "reasoning_effort": "high"}, 3.0).caps == {REASONING}
    assert needs_of({"messages": [], "thinking": {"type": "enabled"}}, 3.0).caps == {REASONING}
    long = needs_of({"messages": LONG, "max_tokens": 500}, 3.0)
    assert long.input_tokens == 60_001 and long.output_tokens == 500
    assert needs_of({"prompt": "x" * 300, "max_completion_tokens": 7}, 3.0) == Needs(frozenset(), 101, 7)
    assert needs_of({"prompt": ["x" * 30, "y" * 30]}, 3.0).input_tokens == 21


def test_offers_come_from_model_info_then_litellm() -> None:
    offers = offers_from_config({"model_list": [
        # no overrides: LiteLLM's model info for gpt-4o says vision + tools
        {"model_name": "known", "litellm_params": {"model": "openai/gpt-4o"}},
        # explicit model_info wins over LiteLLM's
        {"model_name": "overridden", "litellm_params": {"model": "openai/gpt-4o"},
         "model_info": {"supports_vision": False, "max_input_tokens": 1000}},
        # unknown to LiteLLM and no overrides: trusted with nothing, no limits known
        {"model_name": "unknown", "litellm_params": {"model": "openai/my-finetune"}},
        # two deployments: the group offers what both offer
        {"model_name": "pair", "litellm_params": {"model": "openai/a"},
         "model_info": {"supports_vision": True, "supports_function_calling": True, "max_input_tokens": 8000}},
        {"model_name": "pair", "litellm_params": {"model": "openai/b"},
         "model_info": {"supports_vision": False, "supports_function_calling": True, "max_input_tokens": 4000}},
    ]})
    assert {VISION, TOOLS} <= offers["known"].caps and offers["known"].max_input
    assert VISION not in offers["overridden"].caps and offers["overridden"].max_input == 1000
    assert offers["unknown"].caps == frozenset() and offers["unknown"].max_input is None
    assert offers["pair"].caps == {TOOLS} and offers["pair"].max_input == 4000
    assert missing(offers["pair"], Needs(frozenset({VISION}), 5000, None)) == [VISION, "context window"]
    assert missing(offers["unknown"], Needs(frozenset(), 10**9, None)) == []


# ---- end to end ----------------------------------------------------------------------------------------

STRICT_POLICY = {
    "levels": {
        "eco": ["deepinfra-mistral-7b", "groq-gemma2-9b", "deepinfra-llama-3.1-8b", "openrouter-gemini-2.0-flash"],
        "balanced": ["gpt-4o-mini"],
        "precision": ["claude-sonnet-4"],
    },
    "tiers": {"enterprise": {"levels": ["eco", "balanced", "precision"], "models": ["*"]},
              "free": {"levels": ["eco"], "models": []}},
    "default_tier": "enterprise",
    "default_level": "eco",
    "escalate_for_capability": False,
}


@pytest.fixture(scope="module")
def shipped(start_proxy, keys) -> ProxyProcess:
    keys.add("sk-cap-ent", user_id="ce", metadata={"tier": "enterprise"})
    keys.add("sk-cap-free", user_id="cf", metadata={"tier": "free"})
    return start_proxy(plugins=OTHERS_OFF, name="cap-shipped")


@pytest.fixture(scope="module")
def strict(start_proxy, keys) -> ProxyProcess:
    keys.add("sk-cap-ent", user_id="ce", metadata={"tier": "enterprise"})
    return start_proxy(plugins={**OTHERS_OFF, "routing": STRICT_POLICY}, name="cap-strict")


def post(proxy: ProxyProcess, key: str, body: dict[str, Any]):
    with proxy.client(key) as client:
        return client.post("/v1/chat/completions", json=body)


def test_plain_requests_take_the_first_candidate(strict, shipped, fake, upstream) -> None:
    r = chat(strict, "sk-cap-ent", "eco")
    assert r.status_code == 200 and r.headers[HDR_GROUP] == "deepinfra-mistral-7b"
    assert r.headers[HDR_ESCALATED] == "false"
    r = chat(shipped, "sk-cap-ent", "eco")
    assert r.status_code == 200 and r.headers[HDR_GROUP] == "deepinfra-llama-3.1-8b"
    assert reached(fake) == [upstream["deepinfra-mistral-7b"], upstream["deepinfra-llama-3.1-8b"]]


def test_vision_request_at_eco_skips_text_only_models(strict, shipped, fake, upstream) -> None:
    for proxy in (strict, shipped):
        r = post(proxy, "sk-cap-ent", {"model": "eco", "messages": IMAGE})
        assert r.status_code == 200, r.text
        assert r.headers[HDR_GROUP] == "openrouter-gemini-2.0-flash"
        assert r.headers[HDR_LEVEL] == "eco"
    assert reached(fake) == [upstream["openrouter-gemini-2.0-flash"]] * 2


def test_tools_request_picks_a_function_calling_model(strict, fake, upstream) -> None:
    r = post(strict, "sk-cap-ent", {"model": "eco", "messages": [{"role": "user", "content": "weather?"}],
                                    "tools": TOOLS_SPEC})
    assert r.status_code == 200, r.text
    assert r.headers[HDR_GROUP] == "deepinfra-llama-3.1-8b"
    assert reached(fake) == [upstream["deepinfra-llama-3.1-8b"]]


def test_fallbacks_are_filtered_by_capability(strict, fake, upstream) -> None:
    fake.provider.fail(500, models={upstream["deepinfra-llama-3.1-8b"]})
    r = post(strict, "sk-cap-ent", {"model": "eco", "messages": [{"role": "user", "content": "weather?"}],
                                    "tools": TOOLS_SPEC})
    assert r.status_code == 200, r.text
    assert r.headers[HDR_GROUP] == "openrouter-gemini-2.0-flash"  # not the text-only, tool-less mistral/gemma
    assert upstream["deepinfra-mistral-7b"] not in reached(fake)
    assert upstream["groq-gemma2-9b"] not in reached(fake)


def test_over_long_prompt_skips_small_context_models(strict, fake, upstream) -> None:
    r = post(strict, "sk-cap-ent", {"model": "eco", "messages": LONG})
    assert r.status_code == 200, r.text
    # mistral-7b (32k) and gemma2-9b (8k) are skipped; llama-3.1-8b (131k) is cooling down from the
    # previous test's failures or not: either way a 131k+ model serves
    assert r.headers[HDR_GROUP] in ("deepinfra-llama-3.1-8b", "openrouter-gemini-2.0-flash")
    assert upstream["deepinfra-mistral-7b"] not in reached(fake)
    assert upstream["groq-gemma2-9b"] not in reached(fake)


def test_no_capable_candidate_without_escalation_is_400_naming_the_capability(strict, fake) -> None:
    r = post(strict, "sk-cap-ent", {"model": "eco", "messages": [{"role": "user", "content": "think"}],
                                    "reasoning_effort": "high"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "no model of power level 'eco' can serve this request: it needs reasoning" in message
    assert "power levels your tier allows that can: precision" in message
    assert "claude-sonnet-4" in message
    assert reached(fake) == []


def test_escalation_moves_to_the_next_level_that_can(shipped, fake, upstream) -> None:
    r = post(shipped, "sk-cap-ent", {"model": "eco", "messages": [{"role": "user", "content": "think"}],
                                     "reasoning_effort": "high"})
    assert r.status_code == 200, r.text
    assert (r.headers[HDR_LEVEL], r.headers[HDR_ESCALATED]) == ("precision", "true")
    assert r.headers[HDR_GROUP] == "claude-sonnet-4"
    assert reached(fake) == [upstream["claude-sonnet-4"]]
    # a free caller has no level that can: 400 even with escalation on
    r = post(shipped, "sk-cap-free", {"model": "eco", "messages": [{"role": "user", "content": "think"}],
                                      "reasoning_effort": "high"})
    assert r.status_code == 400, r.text
    assert "it needs reasoning; no power level your tier allows can" in r.json()["error"]["message"]


def test_custom_model_lacking_a_capability_is_400_before_any_call(strict, fake) -> None:
    r = post(strict, "sk-cap-ent", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],
                                    "reasoning_effort": "high"})
    assert r.status_code == 400, r.text
    assert "model 'gpt-4o-mini' cannot serve this request: it needs reasoning" in r.json()["error"]["message"]
    r = post(strict, "sk-cap-ent", {"model": "deepinfra-mistral-7b", "messages": IMAGE, "stream": True})
    assert r.status_code == 400 and "vision (image input)" in r.text
    r = post(strict, "sk-cap-ent", {"model": "groq-gemma2-9b", "messages": LONG})
    assert r.status_code == 400 and "a context window for ~60001 input tokens" in r.text
    assert reached(fake) == []
