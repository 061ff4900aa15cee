"""degrade_when_low_credits end to end: routing + the real credits capability (Postgres + Redis).

A caller with 0.05 credits cannot afford the worst case of a precision request with max_tokens=1000
(claude-sonnet-4: ~1.5 credits) nor of balanced (gpt-4o-mini: ~0.06) but can afford eco
(deepinfra-llama-3.1-8b: ~0.005): routing steps down to the cheapest affordable level and says so in
the headers; a request it can afford is left alone.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.support.proxy import ProxyProcess
from tests.test_routing_e2e import HDR_DEGRADED, HDR_GROUP, HDR_LEVEL, chat, reached, upstream  # noqa: F401


@pytest.fixture(scope="module")
def proxy(start_proxy, keys) -> ProxyProcess:
    keys.add("sk-poor", user_id="poor-user", metadata={"tier": "enterprise"})
    keys.add("sk-poor-free", user_id="poor-free", metadata={"tier": "free"})
    return start_proxy(plugins={
        "routing": {"enabled": True, "degrade_when_low_credits": True},
        "credits": {"enabled": True, "starting_grant": "0.05"},
        "byok": {"enabled": False}, "health": {"enabled": False},
    }, name="degrade")


def test_unaffordable_level_degrades_to_cheaper_allowed_level(proxy, fake, upstream) -> None:
    r = chat(proxy, "sk-poor", "precision", max_tokens=1000)
    assert r.status_code == 200, r.text
    assert r.headers[HDR_LEVEL] == "eco"
    assert r.headers[HDR_DEGRADED] == "true"
    assert r.headers[HDR_GROUP] == "deepinfra-llama-3.1-8b"
    assert reached(fake) == [upstream["deepinfra-llama-3.1-8b"]]


def wait_until_settled(proxy: ProxyProcess, key: str, timeout: float = 15.0) -> None:
    """Holds are released after the response, in the background: don't let an earlier request's
    hold make this one look unaffordable."""
    deadline = time.time() + timeout
    with proxy.client(key) as client:
        while time.time() < deadline:
            if Decimal(client.get("/plugins/credits/balance").json()["held"]) == 0:
                return
            time.sleep(0.1)
    raise AssertionError("an earlier hold was not settled in time")


def test_affordable_request_is_not_degraded(proxy, fake, upstream) -> None:
    wait_until_settled(proxy, "sk-poor")
    r = chat(proxy, "sk-poor", "precision", max_tokens=10)
    assert r.status_code == 200, r.text
    assert (r.headers[HDR_LEVEL], r.headers[HDR_DEGRADED]) == ("precision", "false")
    assert reached(fake) == [upstream["claude-sonnet-4"]]


def test_no_affordable_level_leaves_the_refusal_to_credits(proxy, fake) -> None:
    # free tier has eco only: nothing cheaper to step down to, credits answers 402 itself
    # (a ~100k-token prompt: ~0.3 credits of input on deepinfra-llama-3.1-8b, within its context)
    with proxy.client("sk-poor-free") as client:
        r = client.post("/v1/chat/completions", json={
            "model": "eco", "messages": [{"role": "user", "content": "lorem ipsum " * 25_000}]})
    assert r.status_code == 402, r.text
    assert reached(fake) == []
