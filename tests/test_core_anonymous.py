"""Anonymous calls are 401, not 500 (issue 16, point 4), on the path a real operator has: the shipped
config with the master key only -- no ``custom_auth`` (the rest of the suite authenticates test keys
through ``tests.support.custom_auth``, which would hide LiteLLM's own no-key path)."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.support.proxy import MASTER_KEY


def plugin_routes() -> list[tuple[str, str]]:
    """Every (method, path) our capabilities mount, path parameters filled in."""
    from litellm_plugins.byok.api import router as byok
    from litellm_plugins.core.routes import ready_router
    from litellm_plugins.credits.api import router as credits
    from litellm_plugins.health.api import router as health
    from litellm_plugins.routing.api import router as routing

    out = []
    for router in (ready_router, byok, credits, health, routing):
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path != "/plugins/ready":  # readiness is public
                for method in sorted(route.methods):
                    out.append((method, re.sub(r"\{[^}]+\}", "x", route.path)))
    return out


@pytest.fixture(scope="module")
def operator_proxy(start_proxy):
    # custom_auth: null = LiteLLM's own key check (master key; no key database here)
    return start_proxy(name="operator", overrides={"general_settings": {"custom_auth": None}})


def test_every_plugin_route_is_covered():
    paths = {p for _, p in plugin_routes()}
    assert {"/plugins/credits/balance", "/plugins/usage", "/plugins/byok/keys", "/plugins/health",
            "/plugins/routing/policy", "/plugins/whoami"} <= paths


@pytest.mark.parametrize("method,path", [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                         ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
                                         *plugin_routes()])
def test_anonymous_request_is_401_in_openai_shape(operator_proxy, method, path):
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]} if method != "GET" else None
    r = httpx.request(method, operator_proxy.url + path, json=body, timeout=30)
    assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text[:300]}"
    error = r.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error) and str(error["code"]) == "401"
    assert "Traceback" not in r.text and "prisma" not in r.text.lower()


def test_master_key_still_works_without_custom_auth(operator_proxy):
    with httpx.Client(base_url=operator_proxy.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30) as c:
        r = c.post("/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        assert c.get("/plugins/whoami").status_code == 200
