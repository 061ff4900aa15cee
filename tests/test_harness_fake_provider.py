"""The fake provider is the only fake in the suite: check that it records and fails as tests assume."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.fake_provider import FakeProviderServer


@pytest.fixture
def server():
    srv = FakeProviderServer()
    srv.up()
    yield srv
    srv.down()


def chat(srv: FakeProviderServer, model: str = "m", key: str = "sk-a", **extra) -> httpx.Response:
    return httpx.post(srv.base_url + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "abcdefgh"}], **extra},
                      timeout=10)


def test_records_model_and_authorization_and_counts_tokens(server) -> None:
    reply = chat(server, "m1", "sk-one", max_tokens=3)
    assert reply.json()["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    call = server.provider.calls[-1]
    assert (call.model, call.authorization, call.status, call.stream) == ("m1", "Bearer sk-one", 200, False)


def test_stream_ends_with_usage_then_done(server) -> None:
    with httpx.stream("POST", server.base_url + "/chat/completions", timeout=10,
                      json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert '"usage": {"prompt_tokens": 1, "completion_tokens": 8' in lines[-2]


def test_failures_on_demand_by_count_and_model(server) -> None:
    server.provider.fail(503, times=2, models={"bad"})
    assert [chat(server, "bad").status_code for _ in range(3)] == [503, 503, 200]
    assert chat(server, "good").status_code == 200
    server.provider.rejected_keys.add("sk-revoked")
    assert chat(server, key="sk-revoked").status_code == 401


def test_slowness_and_down_up(server) -> None:
    server.provider.set_delay(0.3, "slow")
    started = time.perf_counter()
    chat(server, "slow")
    assert time.perf_counter() - started >= 0.3
    server.down()
    with pytest.raises(httpx.ConnectError):
        chat(server)
    server.up()
    assert chat(server).status_code == 200


def test_http_control_for_other_processes(server) -> None:
    httpx.post(server.base_url.removesuffix("/v1") + "/_fake/fail", json={"status": 500, "times": 1})
    assert chat(server).status_code == 500
    calls = httpx.get(server.base_url.removesuffix("/v1") + "/_fake/calls").json()
    assert calls[-1]["status"] == 500
