"""Every endpoint clients call, end to end: OpenAI's Responses API (``/v1/responses``) and Anthropic's
Messages API (``/v1/messages``) with power levels, credits, BYOK and usage rows (issue 22).

One real proxy for the module with the shipped config (guard, routing, BYOK, credits, health on),
real Postgres and Redis. Anthropic deployments keep their own wire format here (``native_wire``):
the fake provider speaks ``/v1/messages`` as well as ``/v1/responses`` and chat completions, so every
call goes through LiteLLM's real translation code. What LiteLLM sends upstream for our catalog
(LiteLLM 1.108.7, checked by ``test_levels_route_charge_exactly_and_log_usage``):

    client route     eco (deepinfra)        balanced (openai)   precision (anthropic)
    /v1/responses    /v1/chat/completions   /v1/responses       /v1/messages
    /v1/messages     /v1/chat/completions   /v1/responses       /v1/messages

Clients are the real SDKs: ``openai`` (``responses.create``), ``anthropic`` (``messages.create``),
LangChain's ``ChatOpenAI`` (Responses API mode).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import anthropic
import asyncpg
import httpx
import openai
import pytest
import yaml

from tests.support import slow_logging
from tests.support.fake_provider import TOOL_ARGUMENTS, FakeProvider
from tests.support.proxy import MASTER_KEY

PROXY_CFG = yaml.safe_load((Path(__file__).resolve().parents[1] / "proxy_config.yaml").read_text())
PRICES = {m["model_name"]: (Decimal(str(m["litellm_params"].get("input_cost_per_token", 0))),
                            Decimal(str(m["litellm_params"].get("output_cost_per_token", 0))))
          for m in PROXY_CFG["model_list"]}
UPSTREAM = {m["model_name"]: m["litellm_params"]["model"].split("/", 1)[1] for m in PROXY_CFG["model_list"]}
FIRST = {"eco": "deepinfra-llama-3.1-8b", "balanced": "gpt-4o-mini", "precision": "claude-sonnet-4"}
UPSTREAM_PATH = {"eco": "/chat/completions", "balanced": "/responses", "precision": "/messages"}
RATE = Decimal(100)  # credits per USD (shipped config)
UNIT = Decimal(1_000_000)
STARTING = 50  # credits per new account: a precision call with a large output limit cannot be held
HDR_GROUP = "x-litellm-plugins-model-group"
HDR_LEVEL = "x-litellm-plugins-power-level"
ENDPOINTS = ("responses", "messages")
VOID_GROUPS = {("responses", False): "gpt-4.1", ("responses", True): "gpt-4.1-mini",
               ("messages", False): "claude-3.5-haiku", ("messages", True): "openrouter-gemini-2.5-pro"}
IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def proxy(start_proxy, keys):  # noqa: ANN001
    return start_proxy(plugins={"credits": {"starting_grant": STARTING, "writer_interval_seconds": 0.05,
                                            "reconcile_interval_seconds": 1}},
                       native_wire=("anthropic/",))


def user(keys, tier: str = "enterprise", **meta: Any) -> tuple[str, str]:  # noqa: ANN001
    """A fresh caller (its own credit account): (virtual key, account)."""
    name = f"u{uuid.uuid4().hex[:10]}"
    keys.add(f"sk-{name}", user_id=name, metadata={"tier": tier, **meta})
    return f"sk-{name}", f"user:{name}"


def oai(proxy, key: str) -> openai.OpenAI:  # noqa: ANN001
    return openai.OpenAI(api_key=key, base_url=proxy.url + "/v1", max_retries=0, timeout=60)


def ant(proxy, key: str) -> anthropic.Anthropic:  # noqa: ANN001
    # The Anthropic SDK appends /v1/messages to base_url; LiteLLM reads the key from x-api-key too.
    return anthropic.Anthropic(api_key=key, base_url=proxy.url, max_retries=0, timeout=60)


def call(proxy, key: str, endpoint: str, model: str, text: str, stream: bool = False,  # noqa: ANN001
         **extra: Any) -> tuple[httpx.Headers, str]:
    """One call through the real SDK: (response headers, answer text)."""
    if endpoint == "responses":
        client = oai(proxy, key)
        extra.setdefault("max_output_tokens", 100)  # a precision hold without it exceeds a new account
        if stream:
            events = client.responses.create(model=model, input=text, stream=True, **extra)
            deltas, completed = [], None
            for event in events:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
                elif event.type == "response.completed":
                    completed = event.response
            assert completed is not None and completed.usage is not None
            return events.response.headers, "".join(deltas)
        raw = client.responses.with_raw_response.create(model=model, input=text, **extra)
        return raw.headers, raw.parse().output_text
    client = ant(proxy, key)
    extra.setdefault("max_tokens", 64)
    messages = [{"role": "user", "content": text}]
    if stream:
        events = client.messages.create(model=model, messages=messages, stream=True, **extra)
        deltas, stopped = [], False
        for event in events:
            if event.type == "content_block_delta":
                deltas.append(event.delta.text)
            elif event.type == "message_stop":
                stopped = True
        assert stopped
        return events.response.headers, "".join(deltas)
    raw = client.messages.with_raw_response.create(model=model, messages=messages, **extra)
    return raw.headers, "".join(block.text for block in raw.parse().content if block.type == "text")


def upstream_calls(fake, tag: str) -> list:  # noqa: ANN001
    return [c for c in fake.provider.calls if tag in json.dumps(c.body)]


def expected_units(group: str, upstream_body: dict, completion: int = 8) -> int:
    """LiteLLM's cost of the fake's answer (the fake's usage) at the group's configured prices."""
    prompt = FakeProvider.prompt_tokens(upstream_body)
    inp, out = PRICES[group]
    cost = prompt * inp + completion * out
    return int((cost * RATE * UNIT).to_integral_value(ROUND_HALF_UP))


def units_of(text: str) -> int:
    return int(Decimal(text) * UNIT)


async def db_fetch(dsn: str, sql: str, *args):  # noqa: ANN201
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "litellm_plugins"})
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def wait_rows(dsn: str, sql: str, *args, count: int, timeout: float = 15.0) -> list:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await db_fetch(dsn, sql, *args)
        if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)


def balance(proxy, key: str) -> dict:  # noqa: ANN001
    with proxy.client(key) as c:
        r = c.get("/plugins/credits/balance")
    assert r.status_code == 200, r.text
    return r.json()


# ---- routing + credits + usage, per endpoint, level and streaming --------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("level", ["eco", "balanced", "precision"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_levels_route_charge_exactly_and_log_usage(proxy, keys, fake, module_database, endpoint, level,  # noqa: ANN001
                                                         stream) -> None:
    key, account = user(keys)
    tag = f"tag-{uuid.uuid4().hex[:8]}"
    headers, text = call(proxy, key, endpoint, level, f"hello {tag}, how are you today?", stream=stream)
    group = FIRST[level]
    assert text.split() == [f"w{i}" for i in range(8)]
    assert headers[HDR_LEVEL] == level and headers[HDR_GROUP] == group
    [up] = upstream_calls(fake, tag)  # exactly one upstream call, through LiteLLM's translation
    assert up.path.endswith(UPSTREAM_PATH[level]) and up.model == UPSTREAM[group]
    assert "power_level" not in up.body and "litellm_plugins" not in json.dumps(up.body)
    want = expected_units(group, up.body)
    assert want > 0
    settles = await wait_rows(module_database, "SELECT delta FROM credit_ledger WHERE account = $1 AND kind = 'settle'",
                              account, count=1)
    assert [r["delta"] for r in settles] == [-want]  # LiteLLM's cost to the unit, charged once
    held = units_of(headers["x-litellm-plugins-credits-held"])
    assert held >= want
    if not stream:  # the cost is known before the response leaves (/v1/messages too: fact 30)
        assert units_of(headers["x-litellm-plugins-credits-charged"]) == want
        assert units_of(headers["x-litellm-plugins-credits-balance"]) == STARTING * 1_000_000 - want
        litellm_cost = Decimal(headers["x-litellm-response-cost"])  # LiteLLM's own figure, in its header
        assert int((litellm_cost * RATE * UNIT).to_integral_value(ROUND_HALF_UP)) == want
    else:  # streams: headers leave before the cost is known; settled after the stream
        assert "x-litellm-plugins-credits-charged" not in headers
    [row] = await wait_rows(module_database, "SELECT * FROM usage_log WHERE account = $1", account, count=1)
    assert (row["status"], row["power_level"], row["model_group"], row["stream"], row["byok"]) == (
        "success", level, group, stream, False)
    assert row["credits_charged"] == want
    assert int((row["cost_usd"] * RATE * UNIT).to_integral_value(ROUND_HALF_UP)) == want
    assert row["prompt_tokens"] == FakeProvider.prompt_tokens(up.body) and row["completion_tokens"] == 8
    await asyncio.sleep(0.3)  # a second settle (a duplicate callback) would have landed by now
    kinds = [r["kind"] for r in await db_fetch(
        module_database, "SELECT kind FROM credit_ledger WHERE account = $1 ORDER BY id", account)]
    assert kinds == ["grant", "hold", "settle"]
    assert units_of(balance(proxy, key)["balance"]) == STARTING * 1_000_000 - want


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_auto_level_from_header_body_and_key_metadata(proxy, keys, fake, endpoint) -> None:  # noqa: ANN001
    key, _ = user(keys)
    headers, _ = call(proxy, key, endpoint, "auto", "auto from header", extra_headers={"X-Power-Level": "precision"})
    assert headers[HDR_LEVEL] == "precision" and headers[HDR_GROUP] == FIRST["precision"]
    headers, _ = call(proxy, key, endpoint, "auto", "auto from body", extra_body={"power_level": "balanced"})
    assert headers[HDR_LEVEL] == "balanced" and headers[HDR_GROUP] == FIRST["balanced"]
    assert all("power_level" not in c.body for c in fake.provider.calls)  # never forwarded upstream
    meta_key, _ = user(keys, power_level="eco")
    headers, _ = call(proxy, meta_key, endpoint, "auto", "auto from key metadata")
    assert headers[HDR_LEVEL] == "eco" and headers[HDR_GROUP] == FIRST["eco"]
    headers, _ = call(proxy, key, endpoint, "auto", "auto from default")
    assert headers[HDR_LEVEL] == "balanced"  # the enterprise tier's default_level


def test_errors_are_shaped_as_each_api_expects(proxy, keys, fake) -> None:  # noqa: ANN001
    free, _ = user(keys, tier="free")
    with proxy.client(free) as c:
        r = c.post("/v1/messages", json={"model": "precision", "max_tokens": 10,
                                         "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 403, r.text
        body = r.json()
        assert body["type"] == "error" and "not allowed for tier 'free'" in body["error"]["message"]
        assert isinstance(body["error"]["type"], str)
        r = c.post("/v1/responses", json={"model": "precision", "input": "hi"})
        assert r.status_code == 403, r.text
        assert "not allowed for tier 'free'" in r.json()["error"]["message"]
        r = c.post("/v1/messages", json={"model": "turbo", "max_tokens": 10,
                                         "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 400 and r.json()["type"] == "error", r.text
        r = c.post("/v1/embeddings", json={"model": "eco", "input": "hi"})
        assert r.status_code == 400 and "/v1/responses and /v1/messages" in r.json()["error"]["message"]
    # The SDKs raise their own typed errors from those bodies.
    with pytest.raises(anthropic.PermissionDeniedError):
        ant(proxy, free).messages.create(model="precision", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.PermissionDeniedError):
        oai(proxy, free).responses.create(model="precision", input="x")
    assert fake.provider.calls == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_capability_needs_are_read_from_each_api_shape(proxy, keys, fake, endpoint) -> None:  # noqa: ANN001
    key, _ = user(keys)
    # An image: eco's first candidates cannot see; openrouter-gemini-2.0-flash (vision) serves.
    if endpoint == "responses":
        body = {"model": "eco", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this"}, {"type": "input_image", "image_url": IMAGE}]}]}
    else:
        body = {"model": "eco", "max_tokens": 32, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE.split(",")[1]}}]}]}
    with proxy.client(key) as c:
        r = c.post(f"/v1/{endpoint}", json=body)
        assert r.status_code == 200, r.text
        assert r.headers[HDR_GROUP] == "openrouter-gemini-2.0-flash"
        # An output limit above deepinfra-llama-3.1-8b's 4096: the next eco candidate (8192) serves.
        limit = {"max_output_tokens": 6000} if endpoint == "responses" else {"max_tokens": 6000}
        text = {"input": "long answer please"} if endpoint == "responses" else {
            "messages": [{"role": "user", "content": "long answer please"}]}
        r = c.post(f"/v1/{endpoint}", json={"model": "eco", **text, **limit})
        assert r.status_code == 200, r.text
        assert r.headers[HDR_GROUP] == "groq-llama-3.1-8b"
        # Tools, in each API's own shape, reach the provider (translated where LiteLLM translates).
        tools = ([{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
                 if endpoint == "responses" else
                 [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}])
        r = c.post(f"/v1/{endpoint}", json={"model": "balanced", **text, "tools": tools,
                                             **({"max_tokens": 32} if endpoint == "messages" else {})})
        assert r.status_code == 200, r.text
        assert r.headers[HDR_GROUP] == "gpt-4o-mini"
        assert "get_weather" in json.dumps(fake.provider.calls[-1].body.get("tools"))
        # A model that cannot serve the need: the same 400 as on chat, in the API's shape.
        r = c.post(f"/v1/{endpoint}", json={**body, "model": "deepinfra-llama-3.1-8b"})
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert "vision" in message


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_fallback_stays_inside_the_level(proxy, keys, fake, endpoint) -> None:  # noqa: ANN001
    key, _ = user(keys)
    fake.provider.fail(500, models={UPSTREAM["deepinfra-llama-3.1-8b"]})
    headers, text = call(proxy, key, endpoint, "eco", f"fallback {endpoint}")
    assert text
    assert headers[HDR_LEVEL] == "eco"
    served = {c.model for c in fake.provider.calls if c.status == 200 and c.model}  # (not health probes)
    eco_upstream = {UPSTREAM[g] for g in PROXY_CFG["litellm_plugins"]["routing"]["levels"]["eco"] if g in UPSTREAM}
    assert served and served <= eco_upstream and UPSTREAM["deepinfra-llama-3.1-8b"] not in served
    assert headers[HDR_GROUP] != "deepinfra-llama-3.1-8b", [f"{k}={v}" for k, v in headers.items() if "cost" not in k]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_402_before_the_provider_and_nothing_held(proxy, keys, fake, module_database, endpoint,  # noqa: ANN001
                                                        stream) -> None:
    key, account = user(keys)
    # claude-sonnet-4: 60000 output tokens x $0.000015 = 90 credits > the 50 a new account has.
    limit = {"max_output_tokens": 60000} if endpoint == "responses" else {"max_tokens": 60000}
    text = {"input": "expensive"} if endpoint == "responses" else {"messages": [{"role": "user", "content": "x"}]}
    with proxy.client(key) as c:
        r = c.post(f"/v1/{endpoint}", json={"model": "precision", **text, **limit, "stream": stream})
    assert r.status_code == 402, r.text
    body = r.json()
    if endpoint == "messages":
        assert body["type"] == "error" and "Insufficient credits" in body["error"]["message"]
    else:
        assert body["error"]["type"] == "insufficient_credits" and "Insufficient credits" in body["error"]["message"]
    assert fake.provider.calls == []  # the provider was never called
    b = balance(proxy, key)
    assert units_of(b["balance"]) == STARTING * 1_000_000 and units_of(b.get("held", "0")) == 0
    kinds = [r["kind"] for r in await db_fetch(
        module_database, "SELECT kind FROM credit_ledger WHERE account = $1", account)]
    assert "hold" not in kinds and "settle" not in kinds
    # The SDK's typed error, from the same 402.
    error_type = anthropic.APIStatusError if endpoint == "messages" else openai.APIStatusError
    with pytest.raises(error_type) as info:
        call(proxy, key, endpoint, "precision", "expensive", **limit)
    assert info.value.status_code == 402


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
def test_repeated_402s_leave_the_deployment_healthy(proxy, keys, fake, path) -> None:  # noqa: ANN001
    """LiteLLM logs a hook's refusal as a failure of the routed deployment: health must not count it
    (before the fix, five 402s opened claude-3.7-sonnet's circuit and the next caller got a 503)."""
    key, _ = user(keys)
    limit = "max_output_tokens" if path == "/v1/responses" else "max_tokens"
    text = {"input": "x"} if path == "/v1/responses" else {"messages": [{"role": "user", "content": "x"}]}
    with proxy.client(key) as c:
        for _ in range(7):
            r = c.post(path, json={"model": "claude-3.7-sonnet", **text, limit: 60000})
            assert r.status_code == 402, r.text
        r = c.post(path, json={"model": "claude-3.7-sonnet", **text, limit: 10})
        assert r.status_code == 200, r.text
        assert fake.provider.calls_to(UPSTREAM["claude-3.7-sonnet"])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_failure_voids_the_hold(proxy, keys, fake, module_database, endpoint, stream) -> None:  # noqa: ANN001
    key, account = user(keys)
    fake.provider.fail(503)  # every provider, every attempt
    with proxy.client(key) as c:
        text = ({"input": "fails", "max_output_tokens": 100} if endpoint == "responses"
                else {"messages": [{"role": "user", "content": "x"}], "max_tokens": 32})
        # A group no later test uses: its failures cool it down (LiteLLM 1.102.4 cools single-deployment
        # groups, docs/litellm.md fact 24; health's circuit may open too).
        r = c.post(f"/v1/{endpoint}", json={"model": VOID_GROUPS[(endpoint, stream)], **text, "stream": stream})
    assert r.status_code >= 500, r.text
    if endpoint == "messages":
        assert r.json()["type"] == "error"
    assert fake.provider.calls, r.text  # it did reach the provider
    rows = await wait_rows(module_database, "SELECT kind, delta FROM credit_ledger WHERE account = $1 AND kind = 'void'",
                           account, count=1)
    assert [r["delta"] for r in rows] == [0]
    kinds = [r["kind"] for r in await db_fetch(
        module_database, "SELECT kind FROM credit_ledger WHERE account = $1 ORDER BY id", account)]
    assert kinds == ["grant", "hold", "void"]
    assert units_of(balance(proxy, key)["balance"]) == STARTING * 1_000_000


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_client_leaving_a_stream_closes_the_hold_once(proxy, keys, fake, module_database, endpoint) -> None:  # noqa: ANN001
    """The client reads one event and hangs up: the hold is closed exactly once (settled for what was
    generated, or voided), never left open."""
    key, account = user(keys)
    fake.provider.chunk_delay = 0.3
    text = ({"input": "leave early", "max_output_tokens": 100} if endpoint == "responses"
            else {"messages": [{"role": "user", "content": "leave early"}], "max_tokens": 32})
    with proxy.client(key) as c:
        with c.stream("POST", f"/v1/{endpoint}", json={"model": "balanced", **text, "stream": True}) as r:
            assert r.status_code == 200
            next(r.iter_lines())
    rows = await wait_rows(module_database, "SELECT kind FROM credit_ledger WHERE account = $1 AND kind IN "
                           "('settle', 'void')", account, count=1, timeout=20)
    await asyncio.sleep(1.0)  # a second close would land by now
    kinds = [r["kind"] for r in await db_fetch(
        module_database, "SELECT kind FROM credit_ledger WHERE account = $1 ORDER BY id", account)]
    assert kinds[:2] == ["grant", "hold"] and len(kinds) == 3 and kinds[2] in ("settle", "void"), kinds
    assert rows
    b = balance(proxy, key)
    assert units_of(b["held"]) == 0


WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def tool_call(proxy, key: str, endpoint: str, model: str, text: str, stream: bool) -> tuple[httpx.Headers, str, dict]:  # noqa: ANN001
    """One call offering a tool that the fake answers with a call of it, through the real SDK:
    (headers, the called tool's name, its arguments) as the client assembles them."""
    if endpoint == "responses":
        tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]
        client = oai(proxy, key)
        if stream:
            events = client.responses.create(model=model, input=text, tools=tools, max_output_tokens=100, stream=True)
            done = [e.item for e in events if e.type == "response.output_item.done"]
            pieces = [e for e in done if e.type == "function_call"]
            assert len(pieces) == 1, done
            return events.response.headers, pieces[0].name, json.loads(pieces[0].arguments)
        raw = client.responses.with_raw_response.create(model=model, input=text, tools=tools, max_output_tokens=100)
        [item] = [o for o in raw.parse().output if o.type == "function_call"]
        return raw.headers, item.name, json.loads(item.arguments)
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    messages = [{"role": "user", "content": text}]
    client = ant(proxy, key)
    if stream:
        events = client.messages.create(model=model, messages=messages, tools=tools, max_tokens=64, stream=True)
        name, partial, stop = None, [], None
        for event in events:
            if event.type == "content_block_start" and event.content_block.type == "tool_use":
                name = event.content_block.name
            elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial.append(event.delta.partial_json)
            elif event.type == "message_delta":
                stop = event.delta.stop_reason
        assert stop == "tool_use"
        return events.response.headers, name, json.loads("".join(partial))
    raw = client.messages.with_raw_response.create(model=model, messages=messages, tools=tools, max_tokens=64)
    answer = raw.parse()
    [block] = [b for b in answer.content if b.type == "tool_use"]
    assert answer.stop_reason == "tool_use"
    return raw.headers, block.name, block.input


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("level", ["eco", "balanced", "precision"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_tool_calls_reach_the_client_and_are_charged_exactly(proxy, keys, fake, module_database,  # noqa: ANN001
                                                                   endpoint, level, stream) -> None:
    """The provider answers with a tool call (in its own API: chat deltas, Responses function-call
    events, Messages tool_use blocks); LiteLLM translates it to the client's API; the caller gets the
    call whole and is charged LiteLLM's cost once, as for a text answer."""
    key, account = user(keys)
    tag = f"tool-{uuid.uuid4().hex[:8]}"
    headers, name, arguments = tool_call(proxy, key, endpoint, level, f"use-tool {tag}: weather?", stream)
    assert (name, arguments) == ("get_weather", json.loads(TOOL_ARGUMENTS))
    assert headers[HDR_LEVEL] == level and headers[HDR_GROUP] == FIRST[level]
    [up] = upstream_calls(fake, tag)
    assert up.path.endswith(UPSTREAM_PATH[level]) and "get_weather" in json.dumps(up.body["tools"])
    want = expected_units(FIRST[level], up.body)
    settles = await wait_rows(module_database, "SELECT delta FROM credit_ledger WHERE account = $1 AND kind = 'settle'",
                              account, count=1)
    assert [r["delta"] for r in settles] == [-want]
    if not stream:
        assert units_of(headers["x-litellm-plugins-credits-charged"]) == want
    [row] = await wait_rows(module_database, "SELECT * FROM usage_log WHERE account = $1", account, count=1)
    assert (row["status"], row["stream"], row["credits_charged"], row["completion_tokens"]) == ("success", stream, want, 8)


# ---- BYOK -----------------------------------------------------------------------------------------

async def test_byok_isolation_in_100_interleaved_calls(proxy, keys, fake, module_database) -> None:  # noqa: ANN001
    """Alice holds her own OpenAI and Anthropic keys (policy only); Bob holds none. 100 calls, 8 at a
    time, alternating caller and endpoint, half streamed: the provider sees Alice's key on Alice's
    calls only."""
    alice, alice_account = user(keys)
    bob, bob_account = user(keys)
    secrets = {p: f"sk-alice-{p}-{uuid.uuid4().hex}" for p in ("openai", "anthropic")}
    with proxy.client(alice) as c:
        for provider, secret in secrets.items():
            r = c.post("/plugins/byok/keys", json={"provider": provider, "key": secret, "policy": "only"})
            assert r.status_code == 200, r.text
            assert secret not in r.text
    run = uuid.uuid4().hex[:8]
    semaphore = asyncio.Semaphore(8)
    failures: list[str] = []
    clients = {who: (openai.AsyncOpenAI(api_key=k, base_url=proxy.url + "/v1", max_retries=0, timeout=60),
                     anthropic.AsyncAnthropic(api_key=k, base_url=proxy.url, max_retries=0, timeout=60))
               for who, k in (("alice", alice), ("bob", bob))}

    async def one(n: int) -> None:
        who = "alice" if n % 2 == 0 else "bob"
        tag = f"run={run} caller={who} n={n}"
        oc, ac = clients[who]
        async with semaphore:
            stream = (n // 4) % 2 == 1  # half the calls streamed
            try:
                if (n // 2) % 2 == 0:  # /v1/responses, balanced -> gpt-4o-mini (openai)
                    result = await oc.responses.create(model="balanced", input=tag, max_output_tokens=50,
                                                       stream=stream)
                else:  # /v1/messages, precision -> claude-sonnet-4 (anthropic, x-api-key)
                    result = await ac.messages.create(model="precision", max_tokens=32, stream=stream,
                                                      messages=[{"role": "user", "content": tag}])
                if stream:
                    assert [event async for event in result]
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{tag}: {exc!r}"[:300])

    await asyncio.gather(*(one(n) for n in range(100)))
    for oc, ac in clients.values():
        await oc.close()
        await ac.close()
    assert not failures, failures[:3]
    seen: dict[tuple[str, str], set[str | None]] = {}
    for c in fake.provider.calls:
        match = re.search(rf"run={run} caller=(\w+) n=(\d+)", json.dumps(c.body))
        if match:
            provider = "anthropic" if c.path.endswith("/messages") else "openai"
            seen.setdefault((match.group(1), provider), set()).add(c.authorization)
    assert sum(1 for c in fake.provider.calls if f"run={run}" in json.dumps(c.body)) == 100
    assert seen[("alice", "openai")] == {f"Bearer {secrets['openai']}"}
    assert seen[("alice", "anthropic")] == {f"Bearer {secrets['anthropic']}"}
    assert seen[("bob", "openai")] == {"Bearer sk-platform-openai"}
    assert seen[("bob", "anthropic")] == {"Bearer sk-platform-anthropic"}
    # Alice's own-key calls charge nothing and say so; Bob's are charged.
    rows = await wait_rows(module_database, "SELECT byok, credits_charged FROM usage_log WHERE account = $1",
                           alice_account, count=50)
    assert len(rows) == 50 and all(r["byok"] and r["credits_charged"] == 0 for r in rows)
    rows = await wait_rows(module_database, "SELECT byok, credits_charged FROM usage_log WHERE account = $1",
                           bob_account, count=50)
    assert len(rows) == 50 and all(not r["byok"] and r["credits_charged"] > 0 for r in rows)
    assert units_of(balance(proxy, alice)["balance"]) == STARTING * 1_000_000


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_byok_prefer_falls_back_to_the_platform_key(proxy, keys, fake, endpoint) -> None:  # noqa: ANN001
    """A `prefer` key the provider refuses: the same group is retried once with the platform key
    (charged), as on chat; the caller's key is tried first."""
    key, _ = user(keys)
    provider, level = ("openai", "balanced") if endpoint == "responses" else ("anthropic", "precision")
    secret = f"sk-carol-{provider}-{uuid.uuid4().hex}"
    with proxy.client(key) as c:
        r = c.post("/plugins/byok/keys", json={"provider": provider, "key": secret, "policy": "prefer"})
        assert r.status_code == 200, r.text
    fake.provider.rejected_keys.add(secret)
    tag = f"prefer-{uuid.uuid4().hex[:8]}"
    headers, text = call(proxy, key, endpoint, level, tag)
    assert text and headers["x-litellm-plugins-byok"] == "false"
    assert headers[HDR_GROUP] == FIRST[level]
    assert [(c.authorization, c.status) for c in upstream_calls(fake, tag)] == [
        (f"Bearer {secret}", 401), (f"Bearer sk-platform-{provider}", 200)]


# Groups no other test of this module calls (a storm cools them down): (control, storm) per route.
STORM_GROUPS = {"responses": ("o1", "o3"), "messages": ("gpt-4-turbo", "claude-opus-4")}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_401_storm_on_a_user_key_does_not_cool_down_the_platform_deployment(proxy, keys, fake, endpoint) -> None:  # noqa: ANN001
    """A caller whose own key the provider refuses (policy ``only``) sends a storm of calls: each is
    a 401 for them, and the platform's deployment stays served for everyone else (LiteLLM cools a
    single-deployment group down after 401s; the attempt made with a user's key is exempt, as on chat)."""
    control, storm = STORM_GROUPS[endpoint]
    bob, _ = user(keys)
    body = (lambda group, tag: {"model": group, "input": tag, "max_output_tokens": 50}) if endpoint == "responses" else (
        lambda group, tag: {"model": group, "max_tokens": 32, "messages": [{"role": "user", "content": tag}]})
    # Control: the same storm on the platform key does cool its group down, so the check below can fail.
    fake.provider.fail(401, times=6, models={UPSTREAM[control]})
    with proxy.client(bob) as c:
        for n in range(6):
            c.post(f"/v1/{endpoint}", json=body(control, f"control-{endpoint}-{n}"))
        fake.provider.clear_failures()
        r = c.post(f"/v1/{endpoint}", json=body(control, f"control-after-{endpoint}"))
    control_cooled = r.status_code != 200 or not upstream_calls(fake, f"control-after-{endpoint}")

    erin, _ = user(keys)
    provider = "openai" if endpoint == "responses" else "anthropic"
    refused = f"sk-erin-{provider}-{uuid.uuid4().hex}"
    with proxy.client(erin) as c:
        assert c.post("/plugins/byok/keys", json={"provider": provider, "key": refused, "policy": "only"}).status_code == 200
        fake.provider.rejected_keys.add(refused)
        for n in range(12):
            r = c.post(f"/v1/{endpoint}", json=body(storm, f"erin-storm-{endpoint}-{n}"))
            assert r.status_code == 401, r.text
            assert "refused your BYOK key" in r.text and refused not in r.text
    with proxy.client(bob) as c:
        r = c.post(f"/v1/{endpoint}", json=body(storm, f"bob-after-{endpoint}"))
    assert r.status_code == 200, r.text
    assert [u.authorization for u in upstream_calls(fake, f"bob-after-{endpoint}")] == [f"Bearer sk-platform-{provider}"]
    assert control_cooled, "control: a platform-key 401 storm should have cooled the group down"


# ---- text completions and embeddings ---------------------------------------------------------------

def sse_payloads(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_text_completions_route_and_charge_exactly(proxy, keys, fake, module_database, stream) -> None:  # noqa: ANN001
    key, account = user(keys)
    tag = f"text-{uuid.uuid4().hex[:8]}"
    with proxy.client(key) as c:
        r = c.post("/v1/completions", json={"model": "eco", "prompt": f"complete {tag} please", "max_tokens": 50,
                                             "stream": stream})
    assert r.status_code == 200, r.text
    if stream:
        text = "".join(p["choices"][0].get("text") or "" for p in sse_payloads(r.text) if p.get("choices"))
    else:
        text = r.json()["choices"][0]["text"]
    assert text.split() == [f"w{i}" for i in range(8)]
    assert r.headers[HDR_LEVEL] == "eco" and r.headers[HDR_GROUP] == FIRST["eco"]
    [up] = upstream_calls(fake, tag)
    assert up.path.endswith("/completions") and up.model == UPSTREAM[FIRST["eco"]]
    want = expected_units(FIRST["eco"], up.body)
    settles = await wait_rows(module_database, "SELECT delta FROM credit_ledger WHERE account = $1 AND kind = 'settle'",
                              account, count=1)
    assert [r["delta"] for r in settles] == [-want]
    if not stream:
        assert units_of(r.headers["x-litellm-plugins-credits-charged"]) == want
    [row] = await wait_rows(module_database, "SELECT * FROM usage_log WHERE account = $1", account, count=1)
    assert (row["status"], row["power_level"], row["model_group"], row["stream"], row["credits_charged"]) == (
        "success", "eco", FIRST["eco"], stream, want)


async def test_embeddings_charge_the_input_exactly(proxy, keys, fake, module_database) -> None:  # noqa: ANN001
    key, account = user(keys)
    tag = f"embed-{uuid.uuid4().hex[:8]}"
    inputs = [f"first input {tag} with some words", "a second, longer input to embed for the test"]
    with proxy.client(key) as c:
        r = c.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": inputs})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
    [up] = upstream_calls(fake, tag)
    tokens = FakeProvider.embedding_tokens(up.body)
    inp, out = PRICES["text-embedding-3-small"]
    assert out == 0
    want = int((tokens * inp * RATE * UNIT).to_integral_value(ROUND_HALF_UP))
    assert want > 0
    assert units_of(r.headers["x-litellm-plugins-credits-charged"]) == want
    assert units_of(r.headers["x-litellm-plugins-credits-held"]) >= want  # the input, no output
    settles = await wait_rows(module_database, "SELECT delta FROM credit_ledger WHERE account = $1 AND kind = 'settle'",
                              account, count=1)
    assert [r["delta"] for r in settles] == [-want]
    [row] = await wait_rows(module_database, "SELECT * FROM usage_log WHERE account = $1", account, count=1)
    assert (row["status"], row["model_group"], row["prompt_tokens"], row["credits_charged"]) == (
        "success", "text-embedding-3-small", tokens, want)


async def test_402_before_the_provider_on_completions_and_embeddings(proxy, start_proxy, keys, fake,  # noqa: ANN001
                                                                     module_database) -> None:
    """An account with nothing left: each route refuses with 402 before any provider is called."""
    poor = start_proxy(plugins={"credits": {"starting_grant": 0, "writer_interval_seconds": 0.05}},
                       native_wire=("anthropic/",), name="poor")
    key, account = user(keys)
    tag = f"poor-{uuid.uuid4().hex[:8]}"
    with poor.client(key) as c:
        for path, body in (("/v1/completions", {"model": "eco", "prompt": tag, "max_tokens": 10}),
                           ("/v1/embeddings", {"model": "text-embedding-3-small", "input": tag}),
                           ("/v1/responses", {"model": "eco", "input": tag, "max_output_tokens": 10}),
                           ("/v1/messages", {"model": "eco", "max_tokens": 10,
                                             "messages": [{"role": "user", "content": tag}]})):
            r = c.post(path, json=body)
            assert r.status_code == 402, (path, r.text)
            assert "Insufficient credits" in r.text
    assert upstream_calls(fake, tag) == []
    kinds = [r["kind"] for r in await db_fetch(module_database, "SELECT kind FROM credit_ledger WHERE account = $1", account)]
    assert "hold" not in kinds and "settle" not in kinds


async def test_byok_isolation_on_completions_and_embeddings_in_100_interleaved_calls(proxy, keys, fake) -> None:  # noqa: ANN001
    """As on the Responses and Messages APIs: Alice's own DeepInfra and OpenAI keys reach the provider
    on her text completions (half streamed) and embeddings only; Bob's calls carry the platform's."""
    alice, _ = user(keys)
    bob, _ = user(keys)
    secrets = {p: f"sk-alice-{p}-{uuid.uuid4().hex}" for p in ("deepinfra", "openai")}
    with proxy.client(alice) as c:
        for provider, secret in secrets.items():
            assert c.post("/plugins/byok/keys", json={"provider": provider, "key": secret, "policy": "only"}).status_code == 200
    run = uuid.uuid4().hex[:8]
    semaphore = asyncio.Semaphore(8)
    failures: list[str] = []
    clients = {who: openai.AsyncOpenAI(api_key=k, base_url=proxy.url + "/v1", max_retries=0, timeout=60)
               for who, k in (("alice", alice), ("bob", bob))}

    async def one(n: int) -> None:
        who = "alice" if n % 2 == 0 else "bob"
        tag = f"run={run} caller={who} n={n}"
        async with semaphore:
            try:
                if (n // 2) % 2 == 0:  # eco -> deepinfra-llama-3.1-8b
                    stream = (n // 4) % 2 == 1
                    result = await clients[who].completions.create(model="eco", prompt=tag, max_tokens=20, stream=stream)
                    if stream:
                        assert [chunk async for chunk in result]
                else:
                    await clients[who].embeddings.create(model="text-embedding-3-small", input=tag)
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{tag}: {exc!r}"[:300])

    await asyncio.gather(*(one(n) for n in range(100)))
    for client in clients.values():
        await client.close()
    assert not failures, failures[:3]
    seen: dict[tuple[str, str], set[str | None]] = {}
    for c in fake.provider.calls:
        match = re.search(rf"run={run} caller=(\w+) n=(\d+)", json.dumps(c.body))
        if match:
            provider = "openai" if c.path.endswith("/embeddings") else "deepinfra"
            seen.setdefault((match.group(1), provider), set()).add(c.authorization)
    assert sum(1 for c in fake.provider.calls if f"run={run}" in json.dumps(c.body)) == 100
    assert seen[("alice", "deepinfra")] == {f"Bearer {secrets['deepinfra']}"}
    assert seen[("alice", "openai")] == {f"Bearer {secrets['openai']}"}
    assert seen[("bob", "deepinfra")] == {"Bearer sk-platform-deepinfra"}
    assert seen[("bob", "openai")] == {"Bearer sk-platform-openai"}


# ---- more of each API -----------------------------------------------------------------------------

def test_responses_previous_response_id_and_tools(proxy, keys, fake) -> None:  # noqa: ANN001
    key, _ = user(keys)
    client = oai(proxy, key)
    first = client.responses.create(model="balanced", input="first turn")
    assert first.id
    second = client.responses.with_raw_response.create(
        model="balanced", input="second turn", previous_response_id=first.id,
        tools=[{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}])
    assert second.headers[HDR_GROUP] == "gpt-4o-mini"
    up = fake.provider.calls[-1]
    assert up.path.endswith("/responses") and up.body.get("previous_response_id", "").startswith("resp_fake")
    assert "lookup" in json.dumps(up.body["tools"])


def test_langchain_chat_openai_on_the_responses_api(proxy, keys, fake) -> None:  # noqa: ANN001
    from langchain_openai import ChatOpenAI
    key, _ = user(keys)
    llm = ChatOpenAI(model="eco", api_key=key, base_url=proxy.url + "/v1", max_retries=0, use_responses_api=True)
    answer = llm.invoke("hello from langchain")
    assert "w0" in answer.text
    assert fake.provider.calls[-1].model == UPSTREAM[FIRST["eco"]]
    chat = ChatOpenAI(model="balanced", api_key=key, base_url=proxy.url + "/v1", max_retries=0)
    assert "w0" in chat.invoke("hello from langchain chat").text
    assert fake.provider.calls[-1].model == UPSTREAM[FIRST["balanced"]]


# ---- kill -9 right after the answers ----------------------------------------------------------------

async def test_kill_right_after_answers_loses_no_charge(proxy, start_proxy, keys, fake, module_database) -> None:  # noqa: ANN001
    """A second proxy (writer interval 1 s) answers plain /v1/messages calls and streamed /v1/responses
    and /v1/messages calls, and is killed (-9) before any of its records could reach Postgres through it: every call a
    client saw answered still gets its one settle (the charge LiteLLM computed) and its usage row,
    written by the module proxy's reconciler from the Redis journal.

    * plain /v1/messages: the first answer to arrive kills the proxy, microseconds later. Its cost is
      asked of LiteLLM's calculator in the headers hook (fact 30) and journalled before it leaves;
      journalled from the success callback instead (as before), this lost the first answer in 2 runs of 2.
    * streamed /v1/responses and /v1/messages at each level: LiteLLM's success logging of these calls
      is held 5 s after their last event by ``tests.support.slow_logging`` (listed first), and the kill
      comes inside that window; the settle is journalled before the stream ends (fact 34), priced from
      the ``response.completed`` event, or from the Messages stream's ``message_start`` /
      ``message_delta`` events.
    """
    callbacks = ["tests.support.slow_logging.slow_logging", *PROXY_CFG["litellm_settings"]["callbacks"]]
    crash = start_proxy(plugins={"credits": {"starting_grant": STARTING, "writer_interval_seconds": 1}},
                        overrides={"litellm_settings": {"callbacks": callbacks}},
                        native_wire=("anthropic/",), name="crash")
    key, account = user(keys)
    answered: list[tuple[str, int]] = []
    start = threading.Barrier(4)

    def plain_message(n: int) -> None:
        body = {"model": "precision", "max_tokens": 32, "messages": [{"role": "user", "content": f"kill {n}"}]}
        with httpx.Client(base_url=crash.url, timeout=30) as c:
            start.wait()
            try:
                r = c.post("/v1/messages", json=body, headers={"Authorization": f"Bearer {key}"})
            except httpx.HTTPError:
                return  # killed before this one was answered
            if r.status_code == 200:
                crash.kill()
                answered.append(("messages", units_of(r.headers["x-litellm-plugins-credits-charged"])))

    # 1. streams on both APIs and every upstream shape (eco: chat completions, balanced: Responses,
    # precision: Messages), their success logging held open; then 2. the plain /v1/messages race.
    streamed = []
    with httpx.Client(base_url=crash.url, timeout=30) as c:
        for level in ("eco", "balanced", "precision"):
            for endpoint in ENDPOINTS:
                body = ({"model": level, "input": f"stream kill {level}", "max_output_tokens": 50}
                        if endpoint == "responses" else
                        {"model": level, "max_tokens": 32, "messages": [{"role": "user", "content": f"stream kill {level}"}]})
                r = c.post(f"/v1/{endpoint}", json={**body, "stream": True},
                           headers={"Authorization": f"Bearer {key}",
                                    "x-litellm-call-id": f"{slow_logging.PREFIX}{uuid.uuid4().hex}"})
                assert r.status_code == 200, r.text
                assert ("response.completed" if endpoint == "responses" else "message_stop") in r.text
                streamed.append(r)
    threads = [threading.Thread(target=plain_message, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    crash.kill()  # (if no plain answer came back) still inside the streams' held-open logging window
    assert answered and all(charge > 0 for _, charge in answered)
    count = len(answered) + len(streamed)
    settles = await wait_rows(module_database, "SELECT delta FROM credit_ledger WHERE account = $1 AND kind = 'settle'",
                              account, count=count, timeout=30)
    assert len(settles) == count
    plain = sorted(charge for _, charge in answered)
    assert set(plain) <= {-r["delta"] for r in settles}
    rows = await wait_rows(module_database, "SELECT stream, credits_charged FROM usage_log WHERE account = $1 "
                           "AND status = 'success'", account, count=count, timeout=15)
    assert sorted(r["credits_charged"] for r in rows) == sorted(-r["delta"] for r in settles)
    assert sum(1 for r in rows if r["stream"]) == len(streamed)
    assert sorted(r["credits_charged"] for r in rows if not r["stream"]) == plain


# ---- routes whose charge is not verified --------------------------------------------------------------

OTHER_ROUTES = [
    ("/v1/images/generations", {"model": "gpt-4o-mini", "prompt": "a cat"}),
    ("/v1/audio/speech", {"model": "gpt-4o-mini", "input": "hello", "voice": "alloy"}),
    ("/v1/moderations", {"model": "gpt-4o-mini", "input": "hello"}),
    ("/v1/rerank", {"model": "gpt-4o-mini", "query": "q", "documents": ["a", "b"]}),
    ("/v1/batches", {"model": "gpt-4o-mini", "input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                     "completion_window": "24h"}),
]


@pytest.mark.parametrize(("path", "body"), OTHER_ROUTES, ids=[p for p, _ in OTHER_ROUTES])
def test_other_model_routes_are_refused_to_prepaid_callers(proxy, keys, fake, path, body) -> None:  # noqa: ANN001
    """``credits.other_endpoints: refuse`` (shipped): a 400 naming the metered routes, before any
    provider call; an admin (the operator) passes the check."""
    key, _ = user(keys)
    with proxy.client(key) as c:
        r = c.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "unsupported_endpoint" and "/v1/chat/completions" in error["message"], error
    assert fake.provider.calls == []
    with proxy.client(MASTER_KEY) as c:
        r = c.post(path, json=body)
    assert "unsupported_endpoint" not in r.text


def test_routes_that_run_no_model_are_not_refused(proxy, keys, fake) -> None:  # noqa: ANN001
    """Reading back a stored response runs no model: nothing to hold, nothing refused."""
    key, _ = user(keys)
    with proxy.client(key) as c:
        r = c.get("/v1/responses/resp_does_not_exist")
    assert "unsupported_endpoint" not in r.text and "Insufficient credits" not in r.text
