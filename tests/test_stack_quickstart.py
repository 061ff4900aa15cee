"""The shipped proxy_config.yaml with every capability as configured, through the OpenAI SDK: what an
operator gets from the quick start, and what a user sees."""

from __future__ import annotations

import time
from decimal import Decimal

import openai
import pytest
from cryptography.fernet import Fernet

from tests.support.proxy import MASTER_KEY


@pytest.fixture(scope="module")
def stack(start_proxy, keys):
    keys.add("sk-stack-user", user_id="stack-user", team_id="stack-team", metadata={"tier": "professional"})
    return start_proxy(name="stack", env={"LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS": Fernet.generate_key().decode()})


def sdk(proxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)


def test_every_capability_is_enabled_in_the_shipped_config(stack) -> None:
    with stack.client() as http:
        settings = http.get("/plugins/settings").json()
    assert {cap: settings[cap]["enabled"] for cap in ("routing", "byok", "credits", "health", "metrics")} == \
        {"routing": True, "byok": True, "credits": True, "health": True, "metrics": True}


def test_demo_model_with_master_key_plain_and_streamed(stack) -> None:
    client = sdk(stack, MASTER_KEY)
    reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from the litellm-plugins demo model."
    chunks = list(client.chat.completions.create(model="demo", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello from the litellm-plugins demo model."


def test_user_power_level_request_is_routed_charged_and_logged(stack, fake) -> None:
    client = sdk(stack, "sk-stack-user")
    raw = client.chat.completions.with_raw_response.create(
        model="eco", messages=[{"role": "user", "content": "hello there"}])
    reply = raw.parse()
    assert reply.choices[0].message.content
    headers = raw.headers
    assert headers["x-litellm-plugins-power-level"] == "eco"
    assert headers["x-litellm-plugins-tier"] == "professional"
    group = headers["x-litellm-plugins-model-group"]
    assert group and fake.provider.calls, "the routed call must reach the (fake) provider"
    assert headers["x-litellm-plugins-byok"] == "false"
    charged = Decimal(headers["x-litellm-plugins-credits-charged"])
    assert charged > 0 and Decimal(headers["x-litellm-plugins-credits-balance"]) == Decimal(1000) - charged
    streamed = list(client.chat.completions.create(model="eco", stream=True,
                                                   messages=[{"role": "user", "content": "stream please"}]))
    assert any(c.choices and c.choices[0].delta.content for c in streamed)

    # both requests settle off the request path and leave a usage row each, with the routing facts
    with stack.client("sk-stack-user") as http:
        deadline = time.time() + 15
        while time.time() < deadline:
            rows = http.get("/plugins/usage").json()
            rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
            if len(rows) >= 2 and all(r["credits_charged"] not in (None, "0.000000") for r in rows):
                break
            time.sleep(0.2)
        balance = http.get("/plugins/credits/balance").json()
    assert len(rows) == 2
    assert {r["power_level"] for r in rows} == {"eco"} and {r["model_group"] for r in rows} == {group}
    assert {r["stream"] for r in rows} == {True, False} and {r["status"] for r in rows} == {"success"}
    total = sum(Decimal(r["credits_charged"]) for r in rows)
    assert Decimal(balance["balance"]) == Decimal(1000) - total and Decimal(balance["held"]) == 0
