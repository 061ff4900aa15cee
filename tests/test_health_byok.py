"""A BYOK 401 storm does not open the platform's circuit; the same storm on the platform key does.

Real proxy with health + BYOK on: a user stores an OpenAI key the fake provider rejects, sends many
requests (each an attempt with the user's key, ``byok_used`` set by the BYOK hook), and the shared
deployments stay healthy. (tests/test_health_unit.py checks the same through the hook directly.)
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.support.proxy import MASTER_KEY

THRESHOLD = 3
ENC_VAR = "LITELLM_PLUGINS_HEALTH_TEST_BYOK_KEYS"
USER_SECRET = "sk-user-own-key-0123456789"


@pytest.fixture(scope="module")
def proxy(start_proxy, fake_server, keys):
    keys.add("sk-byok-user", user_id="bea", metadata={"tier": "enterprise"})
    keys.add("sk-plain-user", user_id="pat", metadata={"tier": "enterprise"})
    base = fake_server.base_url
    models = [{"model_name": "hgroup", "litellm_params": {"model": f"openai/{m}", "api_base": base,
                                                          "api_key": "sk-platform-openai"}}
              for m in ("h-primary", "h-secondary")]
    return start_proxy(
        plugins={"health": {"enabled": True, "failure_threshold": THRESHOLD, "cooldown_s": 30,
                            "probe_interval_s": 60, "refresh_interval_s": 0.2},
                 "byok": {"enabled": True, "encryption_keys": f"os.environ/{ENC_VAR}"},
                 "routing": {"enabled": False}, "credits": {"enabled": False}},
        overrides={"model_list": models,
                   "router_settings": {"num_retries": 0, "disable_cooldowns": True, "allowed_fails": 1000}},
        env={ENC_VAR: Fernet.generate_key().decode()}, name="health_byok")


def _chat(proxy, key: str) -> httpx.Response:
    with proxy.client(key) as client:
        return client.post("/v1/chat/completions",
                           json={"model": "hgroup", "messages": [{"role": "user", "content": "hi"}]})


def _deployments(proxy) -> dict[str, dict[str, Any]]:
    with proxy.client(MASTER_KEY) as client:
        body = client.get("/plugins/health").json()
    return {d["model"].split("/", 1)[1]: d for p in body["providers"] for d in p["deployments"]}


def test_byok_401_storm_keeps_circuits_closed_platform_401_opens_them(proxy, fake):
    with proxy.client("sk-byok-user") as client:
        added = client.post("/plugins/byok/keys", json={"provider": "openai", "key": USER_SECRET,
                                                       "policy": "only", "validate": False})
    assert added.status_code == 200, added.text
    fake.provider.rejected_keys.add(USER_SECRET)
    mark = len(fake.provider.calls)
    statuses = [_chat(proxy, "sk-byok-user").status_code for _ in range(4 * THRESHOLD)]
    assert all(400 <= s < 500 for s in statuses), statuses
    storm = [c for c in fake.provider.calls[mark:] if c.path.endswith("/chat/completions")]
    assert len(storm) == 4 * THRESHOLD and all(c.authorization == f"Bearer {USER_SECRET}" for c in storm)
    time.sleep(0.6)  # logging callbacks run after the response; give them (and the refresher) time
    deps = _deployments(proxy)
    for name in ("h-primary", "h-secondary"):
        assert deps[name]["status"] == "healthy" and deps[name]["consecutive_failures"] == 0, deps[name]
    # other users are unaffected
    assert _chat(proxy, "sk-plain-user").status_code == 200

    # contrast: the platform's own key rejected -> counted -> circuits open
    fake.provider.rejected_keys.add("sk-platform-openai")
    for _ in range(4 * THRESHOLD):
        _chat(proxy, "sk-plain-user")
    deadline = time.monotonic() + 5.0  # failure callbacks run after the responses
    while True:
        deps = _deployments(proxy)
        opened = [n for n in ("h-primary", "h-secondary") if deps[n]["status"] == "down"]
        if opened or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert opened, deps
    assert all(deps[n]["reason"].startswith("traffic: HTTP 401") for n in opened)
    assert USER_SECRET not in str(deps) and "sk-platform" not in str(deps)
