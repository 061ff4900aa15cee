"""The shipped proxy_config.yaml with every capability as configured, through the OpenAI SDK: what an
operator gets from the quick start, and what a user sees."""

from __future__ import annotations

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
    assert {cap: settings[cap]["enabled"] for cap in ("routing", "byok", "credits", "health")} == \
        {"routing": True, "byok": True, "credits": True, "health": True}


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
    streamed = list(client.chat.completions.create(model="eco", stream=True,
                                                   messages=[{"role": "user", "content": "stream please"}]))
    assert any(c.choices and c.choices[0].delta.content for c in streamed)
