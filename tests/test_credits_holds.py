"""No hold outlives its request (issue 16, point 2): every way a request can end after the credit
hold was placed gives the hold back, and ``held`` (GET /plugins/credits/balance) returns to 0 within
one writer interval. Real proxy, real Postgres and Redis, the fake provider."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.test_credits_e2e import OTHERS_OFF, db_fetch, units_of, wait_for

WRITER_INTERVAL = 1.0
CALLBACKS = yaml.safe_load((Path(__file__).resolve().parents[1] / "proxy_config.yaml").read_text())[
    "litellm_settings"]["callbacks"]


@pytest.fixture(scope="module")
def proxy(start_proxy, tmp_path_factory):
    return start_proxy(
        plugins={**OTHERS_OFF, "credits": {"enabled": True, "writer_interval_seconds": WRITER_INTERVAL,
                                           "lease_requests": 0,
                                           "spool_dir": str(tmp_path_factory.mktemp("spool"))}},
        overrides={"litellm_settings": {"callbacks": [*CALLBACKS, "tests.support.later_hook.later_hook"]},
                   "router_settings": {"fallbacks": [{"gpt-4o-mini": ["gpt-4o"]}]}})


def held(proxy, key: str) -> int:
    with proxy.client(key) as c:
        r = c.get("/plugins/credits/balance")
    assert r.status_code == 200, r.text
    return units_of(r.json()["held"])


def wait_held_zero(proxy, key: str, within: float) -> float:
    """Seconds until ``held`` is 0; fails if it is not within ``within`` seconds."""
    start = time.monotonic()
    while True:
        if held(proxy, key) == 0:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"held still {held(proxy, key)} after {within}s"
        time.sleep(0.05)


# One writer interval, plus margin for a loaded machine (the void is journalled in Redis at once).
WITHIN = WRITER_INTERVAL + 1.5


def body(content: str = "hello", **extra) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}


async def test_provider_400_voids_the_hold(proxy, keys, fake, module_database):
    keys.add("sk-h400", user_id="h400")
    fake.provider.fail(400, times=10)
    with proxy.client("sk-h400") as c:
        r = c.post("/v1/chat/completions", json=body())
    assert r.status_code == 400, r.text
    assert fake.provider.calls, "the provider was called and refused"
    wait_held_zero(proxy, "sk-h400", WITHIN)
    rows = await wait_for(module_database, "SELECT kind FROM credit_ledger WHERE account = 'user:h400' ORDER BY id",
                          expect=lambda rows: [r["kind"] for r in rows][-1:] == ["void"])
    assert [r["kind"] for r in rows] == ["grant", "hold", "void"]


async def test_later_hook_rejection_voids_the_hold(proxy, keys, fake, module_database):
    keys.add("sk-hlater", user_id="hlater")
    with proxy.client("sk-hlater") as c:
        r = c.post("/v1/chat/completions", json=body(), headers={"x-test-later-hook": "plain"})
    assert r.status_code >= 400 and not fake.provider.calls
    wait_held_zero(proxy, "sk-hlater", WITHIN)


async def test_hooks_rerun_for_a_rate_limit_fallback_leave_no_hold(proxy, keys, fake, module_database):
    """A later hook's ProxyRateLimitError with a configured fallback: LiteLLM re-runs every pre-call
    hook on a fresh copy of the request, so our first hold is in a dict nobody reports on again."""
    keys.add("sk-hrerun", user_id="hrerun")
    with proxy.client("sk-hrerun") as c:
        r = c.post("/v1/chat/completions", json=body(),
                   headers={"x-test-later-hook": "ratelimit", "x-test-limited-model": "gpt-4o-mini"})
    assert r.status_code == 200, r.text
    assert [call.model for call in fake.provider.calls] == ["gpt-4o"]
    wait_held_zero(proxy, "sk-hrerun", WITHIN)
    rows = await wait_for(module_database,
                          "SELECT kind FROM credit_ledger WHERE account = 'user:hrerun' ORDER BY id",
                          expect=lambda rows: sorted(r["kind"] for r in rows).count("hold") == 2
                          and len(rows) == 5)
    assert sorted(r["kind"] for r in rows) == ["grant", "hold", "hold", "settle", "void"]
    usage = await db_fetch(module_database, "SELECT status FROM usage_log WHERE account = 'user:hrerun'")
    assert [u["status"] for u in usage] == ["success"], "the discarded pass writes no second usage row"


def _stream_then_hang_up(proxy, key: str) -> bytes:
    """Start a streamed request, read until the first chunk arrives, then close the socket."""
    payload = httpx.Request("POST", proxy.url + "/v1/chat/completions",
                            json=body("stream slowly", stream=True),
                            headers={"Authorization": f"Bearer {key}"})
    raw = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           + "".join(f"{k}: {v}\r\n" for k, v in payload.headers.items() if k.lower() != "host")
           + "\r\n").encode() + payload.read()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    try:
        sock.sendall(raw)
        got = b""
        while b"data:" not in got:
            chunk = sock.recv(4096)
            assert chunk, "connection closed before the first chunk"
            got += chunk
    finally:
        sock.close()
    return got


async def test_client_disconnect_mid_stream_voids_the_hold(proxy, keys, fake, module_database):
    keys.add("sk-hgone", user_id="hgone")
    fake.provider.chunk_delay = 1.0  # 8 chunks: ~8 s of stream; we hang up after the first
    head = _stream_then_hang_up(proxy, "sk-hgone")
    assert b" 200 " in head.split(b"\r\n", 1)[0]
    assert held(proxy, "sk-hgone") > 0, "the hold is in flight while the stream runs"
    wait_held_zero(proxy, "sk-hgone", WITHIN)  # long before the stream would have ended
    usage = await wait_for(module_database, "SELECT status, error_type FROM usage_log WHERE account = 'user:hgone'",
                           expect=lambda rows: len(rows) == 1)
    assert len(usage) == 1
