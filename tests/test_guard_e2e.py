"""The request check through the real proxy (issue 16, point 1): a corpus of malformed requests --
hand-written classes plus ones generated with hypothesis -- on every LLM route our hooks touch and on
our /plugins/* routes. Every one must be a clean 4xx in OpenAI's error shape, without traceback text,
without a call at the fake provider, without moving the caller's balance or ``held``, and (LLM
routes) with exactly one ``rejected`` usage row each. Shipped config, every capability on."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litellm_plugins.core.llm_routes import call_type_of
from tests.support.proxy import MASTER_KEY
from tests.test_credits_e2e import db_fetch, wait_for

MAX_BODY = 65536
USER_KEY = "sk-guard-user"
ACCOUNT = "user:guard-user"
CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
EMBED = "/v1/embeddings"
RESPONSES = "/v1/responses"
MSG = [{"role": "user", "content": "hi"}]
VALID = {CHAT: {"model": "eco", "messages": MSG}, TEXT: {"model": "gpt-4o-mini", "prompt": "hi"},
         EMBED: {"model": "text-embedding-3-small", "input": "hi"}, RESPONSES: {"model": "gpt-4o-mini", "input": "hi"}}
# What must never be in an error a client sees.
LEAKS = re.compile(r"Traceback|File \"|site-packages|\.py\b|line \d+, in|sk-platform|sk-test-master")


@pytest.fixture(scope="module")
def stack(start_proxy, keys):
    keys.add(USER_KEY, user_id="guard-user", metadata={"tier": "professional"})
    return start_proxy(name="guard", plugins={"credits": {"writer_interval_seconds": 0.2},
                                              "guard": {"max_body_bytes": MAX_BODY}})


class Corpus:
    """Sends requests and checks each answer; counts what should leave a usage row."""

    def __init__(self, proxy) -> None:
        self.proxy = proxy
        self.llm_rejections = 0
        self.sent = 0

    def send(self, method: str, path: str, content: bytes | None = None, key: str = USER_KEY,
             params: dict[str, Any] | None = None, expect_param: Any = ..., status: int = 400,
             prefix: bool = False) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        with httpx.Client(base_url=self.proxy.url, timeout=30) as client:
            r = client.request(method, path, content=content, headers=headers, params=params)
        self.sent += 1
        where = f"{method} {path} {content[:120] if content else params!r}"
        assert 400 <= r.status_code < 500, f"{where}: {r.status_code} {r.text[:300]}"
        assert not LEAKS.search(r.text), f"{where}: leaks internals: {r.text[:300]}"
        error = r.json().get("error") if r.headers.get("content-type", "").startswith("application/json") else None
        assert isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error), f"{where}: {r.text[:300]}"
        if call_type_of({"type": "http", "method": method, "path": path}) is not None:  # an LLM route
            assert r.status_code == status, f"{where}: {r.status_code} {r.text[:300]}"
            if status == 400:
                self.llm_rejections += 1
            if expect_param is not ...:
                param = error["param"]
                ok = param == expect_param or (prefix and isinstance(param, str) and param.startswith(f"{expect_param}["))
                assert ok, f"{where}: param {param!r}, wanted {expect_param!r}"
        return r

    def body(self, path: str, content: Any, expect_param: Any = ..., prefix: bool = False) -> httpx.Response:
        return self.send("POST", path, json.dumps(content).encode(), expect_param=expect_param, prefix=prefix)


def with_field(path: str, name: str, value: Any) -> dict[str, Any]:
    return {**VALID[path], name: value}


# (path, field, bad value, param the error must name)
HAND_WRITTEN: list[tuple[str, str, Any, str]] = [
    (CHAT, "model", 123, "model"), (CHAT, "model", "", "model"), (CHAT, "model", "   ", "model"),
    (CHAT, "model", None, "model"), (CHAT, "model", ["eco"], "model"), (CHAT, "model", {"a": 1}, "model"),
    (CHAT, "messages", "hi", "messages"), (CHAT, "messages", ["hi"], "messages[0]"), (CHAT, "messages", [], "messages"),
    (CHAT, "messages", None, "messages"), (CHAT, "messages", {"role": "user"}, "messages"),
    (CHAT, "messages", [{"content": "hi"}], "messages[0].role"),
    (CHAT, "messages", [{"role": "wizard", "content": "hi"}], "messages[0].role"),
    (CHAT, "messages", [{"role": 1, "content": "hi"}], "messages[0].role"),
    (CHAT, "messages", [{"role": "user"}], "messages[0].content"),
    (CHAT, "messages", [{"role": "user", "content": 5}], "messages[0].content"),
    (CHAT, "messages", [{"role": "user", "content": ["hi"]}], "messages[0].content[0]"),
    (CHAT, "messages", [*MSG, 7], "messages[1]"),
    (CHAT, "max_tokens", -5, "max_tokens"), (CHAT, "max_tokens", 0, "max_tokens"), (CHAT, "max_tokens", "10", "max_tokens"),
    (CHAT, "max_tokens", 1.5, "max_tokens"), (CHAT, "max_tokens", True, "max_tokens"),
    (CHAT, "max_completion_tokens", 0, "max_completion_tokens"), (CHAT, "n", 100000, "n"), (CHAT, "n", 0, "n"),
    (CHAT, "n", "2", "n"), (CHAT, "n", 129, "n"), (CHAT, "temperature", 2.5, "temperature"),
    (CHAT, "temperature", -0.1, "temperature"), (CHAT, "temperature", "hot", "temperature"),
    (CHAT, "top_p", 1.01, "top_p"), (CHAT, "top_p", [1], "top_p"), (CHAT, "stream", "yes", "stream"),
    (CHAT, "stream", 1, "stream"), (CHAT, "presence_penalty", 3, "presence_penalty"),
    (CHAT, "frequency_penalty", -2.5, "frequency_penalty"), (CHAT, "top_logprobs", 21, "top_logprobs"),
    (CHAT, "logprobs", "true", "logprobs"), (CHAT, "stop", 5, "stop"), (CHAT, "stop", [1, 2], "stop"),
    (CHAT, "seed", 1.5, "seed"), (CHAT, "user", 42, "user"), (CHAT, "tools", "x", "tools"),
    (CHAT, "tools", ["x"], "tools[0]"), (CHAT, "tool_choice", 3, "tool_choice"),
    (CHAT, "response_format", "json", "response_format"), (CHAT, "parallel_tool_calls", "no", "parallel_tool_calls"),
    (CHAT, "logit_bias", [1], "logit_bias"), (CHAT, "stream_options", True, "stream_options"),
    (TEXT, "prompt", None, "prompt"), (TEXT, "prompt", 5, "prompt"), (TEXT, "prompt", [], "prompt"),
    (TEXT, "prompt", [{"a": 1}], "prompt"), (TEXT, "model", 7, "model"), (TEXT, "best_of", 21, "best_of"),
    (TEXT, "n", 0, "n"), (TEXT, "logprobs", 6, "logprobs"), (TEXT, "echo", "y", "echo"),
    (TEXT, "max_tokens", -1, "max_tokens"), (TEXT, "temperature", 9, "temperature"),
    (EMBED, "input", None, "input"), (EMBED, "input", "", "input"), (EMBED, "input", [], "input"),
    (EMBED, "input", [""], "input"), (EMBED, "input", {"a": 1}, "input"), (EMBED, "input", [1.5], "input"),
    (EMBED, "model", False, "model"), (EMBED, "dimensions", 0, "dimensions"),
    (EMBED, "encoding_format", "hex", "encoding_format"),
    (RESPONSES, "input", None, "input"), (RESPONSES, "input", 5, "input"), (RESPONSES, "input", [], "input"),
    (RESPONSES, "input", ["x"], "input[0]"), (RESPONSES, "model", [], "model"),
    (RESPONSES, "max_output_tokens", 0, "max_output_tokens"), (RESPONSES, "temperature", 3, "temperature"),
    (RESPONSES, "stream", "on", "stream"),
]
NOT_OBJECTS = [b"[1, 2]", b'"hi"', b"null", b"5", b"true", b"[]", b'[{"model": "eco"}]']

# Values of each JSON type, for generated requests.
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=8))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


def not_(kind: type | tuple[type, ...]) -> st.SearchStrategy[Any]:
    """Non-null JSON values that are not of ``kind`` (bool counts as its own kind)."""
    def wrong(v: Any) -> bool:
        if v is None:
            return False
        if isinstance(v, bool):
            return bool not in (kind if isinstance(kind, tuple) else (kind,))
        return not isinstance(v, kind)
    return JSON_VALUES.filter(wrong)


def out_of(low: float | None, high: float | None, integer: bool) -> st.SearchStrategy[Any]:
    below = (st.integers(max_value=int(low) - 1) if integer else st.floats(max_value=low, exclude_max=True,
                                                                          allow_nan=False, allow_infinity=False)) \
        if low is not None else st.nothing()
    above = (st.integers(min_value=int(high) + 1) if integer else st.floats(min_value=high, exclude_min=True,
                                                                           allow_nan=False, allow_infinity=False)) \
        if high is not None else st.nothing()
    return st.one_of(below, above)


# field -> strategy of invalid values, per route
INT, NUM = (int,), (int, float)
GENERATED: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    CHAT: {
        "model": st.one_of(not_(str), st.sampled_from(["", " ", "\t"])),
        "messages": st.one_of(not_(list), st.just([]), st.lists(not_(dict), min_size=1, max_size=3),
                              st.lists(st.fixed_dictionaries({"role": st.text(max_size=6).filter(
                                  lambda r: r not in {"system", "developer", "user", "assistant", "tool", "function"}),
                                  "content": st.text(max_size=5)}), min_size=1, max_size=2)),
        "max_tokens": st.one_of(not_(int), out_of(1, None, True)),
        "max_completion_tokens": st.one_of(not_(int), out_of(1, None, True)),
        "n": st.one_of(not_(int), out_of(1, 128, True)),
        "temperature": st.one_of(not_(NUM), out_of(0, 2, False)),
        "top_p": st.one_of(not_(NUM), out_of(0, 1, False)),
        "presence_penalty": st.one_of(not_(NUM), out_of(-2, 2, False)),
        "frequency_penalty": st.one_of(not_(NUM), out_of(-2, 2, False)),
        "stream": not_(bool),
    },
    TEXT: {"prompt": st.one_of(st.integers(), st.booleans(), st.just([]), st.dictionaries(st.text(max_size=3), JSON_SCALARS, max_size=2)),
           "n": st.one_of(not_(int), out_of(1, 128, True)), "best_of": out_of(1, 20, True),
           "temperature": out_of(0, 2, False)},
    EMBED: {"input": st.one_of(st.just(""), st.just([]), st.integers(), st.booleans(),
                               st.dictionaries(st.text(max_size=3), JSON_SCALARS, max_size=2)),
            "dimensions": st.one_of(not_(int), out_of(1, None, True))},
    RESPONSES: {"input": st.one_of(st.integers(), st.booleans(), st.just([]), st.lists(JSON_SCALARS, min_size=1, max_size=2)
                                   .filter(lambda items: any(not isinstance(i, dict) for i in items))),
                "max_output_tokens": st.one_of(not_(int), out_of(1, None, True))},
}
CASES = st.sampled_from([(path, field) for path, fields in GENERATED.items() for field in fields]).flatmap(
    lambda pf: st.tuples(st.just(pf[0]), st.just(pf[1]), GENERATED[pf[0]][pf[1]]))


def llm_calls(fake) -> list:
    """Calls at the fake provider other than health probes (GET /models)."""
    return [c for c in fake.provider.calls if not c.path.endswith("/models")]


def balance(proxy) -> dict[str, Any]:
    with proxy.client(USER_KEY) as c:
        r = c.get("/plugins/credits/balance")
    assert r.status_code == 200, r.text
    return {k: r.json()[k] for k in ("balance", "held", "available")}


async def test_malformed_requests_are_4xx_and_move_nothing(stack, fake, module_database):
    before = balance(stack)
    corpus = Corpus(stack)
    for path, field, value, param in HAND_WRITTEN:
        corpus.body(path, with_field(path, field, value), expect_param=param)
    for streamed, param in (({"model": "eco", "messages": "hi", "stream": True}, "messages"),
                            ({"model": "eco", "messages": MSG, "stream": True, "n": 0}, "n"),
                            ({"model": "eco", "messages": MSG, "stream": True, "stream_options": 1}, "stream_options")):
        corpus.body(CHAT, streamed, expect_param=param)
    for path in VALID:
        for raw in NOT_OBJECTS:
            r = corpus.send("POST", path, raw, expect_param=None)
            assert r.json()["error"]["message"] == "request body must be a JSON object"
    # Azure-style route: the model is in the path, the body has none; a bad field is still refused
    corpus.send("POST", "/openai/deployments/gpt-4o-mini/chat/completions",
                json.dumps({"messages": MSG, "top_p": 7}).encode(), expect_param="top_p")
    # Python's JSON parser (LiteLLM's fallback) takes NaN: the pre-call hook checks what it parsed.
    corpus.send("POST", CHAT, b'{"model": "eco", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
                expect_param="temperature")

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(CASES)
    def generated(case: tuple[str, str, Any]) -> None:
        path, field, value = case
        corpus.body(path, with_field(path, field, value), expect_param=field, prefix=True)

    generated()
    assert corpus.llm_rejections >= 250
    assert llm_calls(fake) == [], "a malformed request reached the provider"
    assert balance(stack) == before, "a malformed request moved money"
    rows = await wait_for(module_database,
                          "SELECT status, error_type, credits_charged FROM usage_log WHERE account = $1",
                          ACCOUNT, expect=lambda rows: len(rows) >= corpus.llm_rejections, timeout=20)
    time.sleep(0.5)
    rows = await db_fetch(module_database, "SELECT status, error_type, credits_charged, model_group FROM usage_log "
                                           "WHERE account = $1", ACCOUNT)
    assert len(rows) == corpus.llm_rejections, "one usage row per rejected request"
    assert {(r["status"], r["error_type"], r["credits_charged"]) for r in rows} == \
        {("rejected", "invalid_request_error", 0)}


def test_oversized_body_is_413_before_anything(stack, fake):
    corpus = Corpus(stack)
    big = json.dumps({"model": "eco", "messages": [{"role": "user", "content": "x" * MAX_BODY}]}).encode()
    r = corpus.send("POST", CHAT, big, status=413)
    assert f"larger than {MAX_BODY} bytes" in r.json()["error"]["message"]
    assert llm_calls(fake) == []


def test_plugin_routes_answer_malformed_input_with_4xx(stack, fake):
    corpus = Corpus(stack)
    bodies = [b"[1]", b'"x"', b"null", b"5", b"{not json", b'{"amount": []}', b'{"amount": "abc", "account": 5}',
              b'{"account": "user:x", "amount": "1", "idempotency_key": ["k"]}', b'{"provider": 1, "api_key": 2}',
              b'{"policy": "sometimes"}', b'{"state": 5}', b'{"state": "down", "ttl_s": "long"}']
    routes = [("POST", "/plugins/credits/grant", MASTER_KEY), ("POST", "/plugins/byok/keys", USER_KEY),
              ("PUT", "/plugins/byok/keys/openai", USER_KEY), ("PATCH", "/plugins/byok/keys/openai", USER_KEY),
              ("POST", "/plugins/byok/keys/openai/test", USER_KEY),
              ("POST", "/plugins/health/deployments/nope/force", MASTER_KEY)]
    for method, path, key in routes:
        for raw in bodies:
            corpus.send(method, path, raw, key=key)
    queries = [("/plugins/usage", {"limit": "0"}), ("/plugins/usage", {"limit": "x"}), ("/plugins/usage", {"from": "yesterday"}),
               ("/plugins/usage", {"status": "great"}), ("/plugins/usage", {"byok": "maybe"}),
               ("/plugins/usage/export", {"format": "xml"}), ("/plugins/usage/summary", {"from": "2026-13-45"}),
               ("/plugins/credits/ledger", {"limit": "-1"}), ("/plugins/byok/audit", {"limit": "many"}),
               ("/plugins/health/audit", {"limit": "-5"})]
    for path, params in queries:
        corpus.send("GET", path, params=params)
    assert corpus.sent == len(routes) * len(bodies) + len(queries)
    assert llm_calls(fake) == []
