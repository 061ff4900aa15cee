"""BYOK end to end: real proxies (two instances on one Postgres + Redis), the fake provider records
the Authorization header of every upstream call.

Tests run in file order and share state (keys added earlier are used later); the secrecy scan and
the encryption-key rotation come last.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from tests.support.proxy import MASTER_KEY, ROOT, ProxyProcess
from tests.support.services import REDIS_URL

ENC_KEY_1 = Fernet.generate_key().decode()
ENC_KEY_2 = Fernet.generate_key().decode()
ENV_VAR = "LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS"
# (groq models are not used: LiteLLM 1.102.4's groq handler fails on the fake's responses with
# "'ModelResponse' object has no attribute 'service_tier'", with or without BYOK.)
TOGETHER = "together-llama-3.1-8b"       # provider together_ai
PLATFORM_TOGETHER = "Bearer sk-platform-together_ai"
OPENROUTER = "openrouter-llama-3.1-70b"  # provider openrouter
PLATFORM_OPENROUTER = "Bearer sk-platform-openrouter"
DEEPINFRA = "deepinfra-mistral-7b"       # provider deepinfra (401-storm group)
PLATFORM_DEEPINFRA = "Bearer sk-platform-deepinfra"
FIREWORKS = "fireworks-llama-3.1-70b"    # provider fireworks_ai (cooldown control group)
FIREWORKS_MODEL = "accounts/fireworks/models/llama-v3p1-70b-instruct"
OPENAI = "gpt-4o-mini"                   # provider openai

# Every plaintext user key this module ever sends; the secrecy test scans for all of them.
SECRETS: list[str] = []
# Every response body any test received from the proxies.
RESPONSES: list[str] = []


def new_secret(label: str) -> str:
    secret = f"sk-{label}-{uuid.uuid4().hex}"
    SECRETS.append(secret)
    return secret


def record(response: httpx.Response) -> httpx.Response:
    RESPONSES.append(f"{response.status_code} {dict(response.headers)} {response.text}")
    return response


def chat(proxy: ProxyProcess, key: str, model: str, tag: str, **extra: Any) -> httpx.Response:
    with proxy.client(key) as client:
        return record(client.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": tag}], **extra}))


def calls_tagged(fake, tag: str) -> list:  # noqa: ANN001
    """Upstream calls whose (only) message is exactly ``tag``."""
    return [c for c in fake.provider.calls
            if any(isinstance(m, dict) and m.get("content") == tag for m in c.body.get("messages") or [])]


def put_key(proxy: ProxyProcess, key: str, provider: str, secret: Any, **extra: Any) -> httpx.Response:
    with proxy.client(key) as client:
        return record(client.post("/plugins/byok/keys", json={"provider": provider, "key": secret, **extra}))


@pytest.fixture(scope="module")
def probe_file(workdir: Path) -> Path:
    path = workdir / "byok_probe.log"
    path.touch()
    return path


def _start(start_proxy, probe_file: Path, name: str, enc_keys: str, workers: int = 1,  # noqa: ANN001
           wait: bool = True) -> ProxyProcess:
    from tests.support.proxy import PROXY_CONFIG
    import yaml
    callbacks = yaml.safe_load(PROXY_CONFIG.read_text())["litellm_settings"]["callbacks"]
    return start_proxy(
        plugins={"byok": {"enabled": True, "encryption_keys": f"os.environ/{ENV_VAR}"}},
        overrides={"litellm_settings": {"callbacks": [*callbacks, "tests.test_byok_probe.probe"]}},
        env={ENV_VAR: enc_keys, "BYOK_PROBE_FILE": str(probe_file),
             # LiteLLM counts tokens on the failure path; for llama models that tries to download a
             # tokenizer from huggingface.co with retries (~25 s per failed request offline).
             "HF_HUB_OFFLINE": "1"}, name=name, num_workers=workers, wait=wait)


@pytest.fixture(scope="module")
def proxies(start_proxy, probe_file, keys) -> tuple[ProxyProcess, ProxyProcess]:  # noqa: ANN001
    # Routing, credits and health are on in proxy_config.yaml: the enterprise tier may name any model.
    meta = {"tier": "enterprise"}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        keys.add(f"sk-{user}", user_id=user, metadata=meta)
    keys.add("sk-team-key", team_id="team-red", metadata=meta)  # no user id: the team owns its keys
    # A: the instance as first deployed (one encryption key). B: already rolled to [new, old], and
    # two workers, so invalidations must reach every worker of another instance.
    # Started together (each boot is mostly one CPU-bound import of litellm; two cores).
    a = _start(start_proxy, probe_file, "byok_a", ENC_KEY_1, wait=False)
    b = _start(start_proxy, probe_file, "byok_b", f"{ENC_KEY_2},{ENC_KEY_1}", workers=2, wait=False)
    a.wait_ready()
    b.wait_ready()
    return a, b


@pytest.fixture(scope="module")
def module_dsn(module_database: str) -> str:
    return module_database


# ---- API: inputs, ownership, validation ---------------------------------------------------------

def test_bad_inputs_get_4xx_never_500(proxies, fake) -> None:  # noqa: ANN001
    a, _ = proxies
    oversized = "sk-" + "x" * 600
    # Keys refused as bad input must not be echoed anywhere either.
    SECRETS.extend([oversized, "sk-valid-looking-key", "sk-array-body-key", "sk-" + "y" * 17_000])
    cases = [
        ({"provider": "groq", "key": ""}, 400),
        ({"provider": "groq", "key": "   \t  "}, 400),
        ({"provider": "groq", "key": oversized}, 400),
        ({"provider": "groq", "key": "sk-has inner-space-12345"}, 400),
        ({"provider": "groq", "key": "sk-ctrl\x01char-12345"}, 400),
        ({"provider": "groq", "key": 12345678}, 400),
        ({"provider": "groq"}, 400),
        ({"provider": "nosuchprovider", "key": "sk-valid-looking-key"}, 400),
        ({"key": "sk-valid-looking-key"}, 400),
        ({"provider": "groq", "key": "sk-valid-looking-key", "policy": "always"}, 400),
        ({"provider": "groq", "key": "sk-valid-looking-key", "validate": "yes"}, 400),
    ]
    for body, status in cases:
        response = record(a.client("sk-alice").post("/plugins/byok/keys", json=body))
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["message"] and str(error["code"]) == str(status)
    with a.client("sk-alice") as client:
        for response in (
            client.post("/plugins/byok/keys", content=b"not json", headers={"content-type": "application/json"}),
            client.post("/plugins/byok/keys", json=["groq", "sk-array-body-key"]),
            client.put("/plugins/byok/keys/groq", json={"key": "sk-" + "y" * 17_000}),
            client.patch("/plugins/byok/keys/groq", json={"policy": "sometimes"}),
            client.patch("/plugins/byok/keys/nosuch", json={"policy": "only"}),
        ):
            record(response)
            assert response.status_code == 400, response.text
        assert record(client.delete("/plugins/byok/keys/groq")).status_code == 404
        assert record(client.patch("/plugins/byok/keys/groq", json={"policy": "only"})).status_code == 404
        assert record(client.post("/plugins/byok/keys/groq/test")).status_code == 404
        assert record(client.delete("/plugins/byok/keys/nosuch")).status_code == 400
        assert record(client.get("/plugins/byok/keys", params={"account": "user:bob"})).status_code == 403
        assert record(client.get("/plugins/byok/audit", params={"account": "user:bob"})).status_code == 403
    with a.client("sk-unknown") as client:
        assert record(client.get("/plugins/byok/keys")).status_code == 401
    # Nothing reached the provider: no validation call for bad input (health probes use platform keys).
    assert not [c for c in fake.provider.calls if "sk-platform-" not in (c.authorization or "")]


def test_refused_key_is_rejected_at_add_with_400(proxies, fake) -> None:  # noqa: ANN001
    a, _ = proxies
    secret = new_secret("refused")
    fake.provider.rejected_keys.add(secret)
    response = put_key(a, "sk-alice", "groq", secret)
    assert response.status_code == 400
    assert "the provider refused the key" in response.json()["error"]["message"]
    validation = [c for c in fake.provider.calls if c.path.endswith("/models") and "sk-refused" in str(c.authorization)]
    assert [c.authorization for c in validation] == [f"Bearer {secret}"]
    assert record(a.client("sk-alice").get("/plugins/byok/keys")).json()["data"] == []


def test_user_key_reaches_provider_only_for_its_owner(proxies, fake) -> None:  # noqa: ANN001
    a, _ = proxies
    # (Alice's first request goes through the platform key: see the report about credits' starting
    # grant for accounts whose first request is BYOK-only.)
    assert chat(a, "sk-alice", OPENAI, "alice-before-byok").status_code == 200
    secret = new_secret("alice-together")
    response = put_key(a, "sk-alice", "together_ai", secret, policy="only")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["key"] == "…" + secret[-4:] and body["policy"] == "only" and body["replaced"] is False
    assert secret not in response.text

    mine = chat(a, "sk-alice", TOGETHER, "alice-first")
    assert mine.status_code == 200, mine.text
    assert mine.headers["x-litellm-plugins-byok"] == "true"
    assert [c.authorization for c in calls_tagged(fake, "alice-first")] == [f"Bearer {secret}"]

    theirs = chat(a, "sk-bob", TOGETHER, "bob-first")
    assert theirs.status_code == 200
    assert theirs.headers["x-litellm-plugins-byok"] == "false"
    assert [c.authorization for c in calls_tagged(fake, "bob-first")] == [PLATFORM_TOGETHER]

    other_provider = chat(a, "sk-alice", OPENAI, "alice-openai")
    assert other_provider.status_code == 200
    assert [c.authorization for c in calls_tagged(fake, "alice-openai")] == ["Bearer sk-platform-openai"]

    listed = record(a.client("sk-alice").get("/plugins/byok/keys")).json()["data"]
    assert [(k["provider"], k["key"], k["policy"]) for k in listed] == [("together_ai", "…" + secret[-4:], "only")]
    assert listed[0]["created_at"]
    assert record(a.client("sk-bob").get("/plugins/byok/keys")).json()["data"] == []
    admin = record(a.client(MASTER_KEY).get("/plugins/byok/keys")).json()["data"]
    assert [(k["account"], k["provider"]) for k in admin] == [("user:alice", "together_ai")]
    assert secret not in json.dumps(admin)
    tested = record(a.client("sk-alice").post("/plugins/byok/keys/together_ai/test"))
    assert tested.status_code == 200 and tested.json()["ok"] is True


def test_team_owned_key_for_a_key_without_user(proxies, fake) -> None:  # noqa: ANN001
    a, _ = proxies
    secret = new_secret("team-red")
    assert put_key(a, "sk-team-key", "openai", secret).status_code == 200
    assert chat(a, "sk-team-key", OPENAI, "team-call").status_code == 200
    assert [c.authorization for c in calls_tagged(fake, "team-call")] == [f"Bearer {secret}"]
    listed = record(a.client("sk-team-key").get("/plugins/byok/keys")).json()["data"]
    assert listed[0]["account"] == "team:team-red"
    with a.client("sk-team-key") as client:  # embeddings go through the same per-attempt injection
        embedded = record(client.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                              "input": "team-embedding"}))
    assert embedded.status_code == 200, embedded.text
    assert [c.authorization for c in fake.provider.calls if c.path.endswith("/embeddings")
            and c.body.get("input") in ("team-embedding", ["team-embedding"])] == [f"Bearer {secret}"]


async def test_1000_interleaved_calls_never_mix_keys(proxies, fake) -> None:  # noqa: ANN001
    """A (policy only) and B (no key; then its own key) interleaved, 16 at a time, on both instances."""
    a, b = proxies
    alice_secret = SECRETS[SECRETS.index(next(s for s in SECRETS if s.startswith("sk-alice-together")))]
    bob_secret = new_secret("bob-together")
    run = uuid.uuid4().hex[:8]
    semaphore = asyncio.Semaphore(16)
    failures: list[str] = []

    async def one(client: httpx.AsyncClient, caller: str, n: int) -> None:
        async with semaphore:
            response = await client.post("/v1/chat/completions", json={
                "model": TOGETHER, "messages": [{"role": "user", "content": f"run={run} caller={caller} n={n}"}]})
            if response.status_code != 200:
                failures.append(f"{caller} {n}: {response.status_code} {response.text[:200]}")

    async def phase(count: int) -> None:
        clients = {(p.name, who): httpx.AsyncClient(base_url=p.url, headers={"Authorization": f"Bearer sk-{who}"},
                                                    timeout=60) for p in (a, b) for who in ("alice", "bob")}
        try:
            tasks = []
            for n in range(count):
                who = "alice" if n % 2 == 0 else "bob"
                proxy = a if (n // 2) % 2 == 0 else b
                tasks.append(one(clients[(proxy.name, who)], who, n))
            await asyncio.gather(*tasks)
        finally:
            for client in clients.values():
                await client.aclose()

    await phase(600)
    # Bob now brings his own key too: the two user keys must never cross either.
    assert put_key(a, "sk-bob", "together_ai", bob_secret).status_code == 200
    await phase(400)
    assert not failures, failures[:5]
    seen = {"alice": set(), "bob": set()}
    count = 0
    for call in fake.provider.calls:
        match = re.search(rf"run={run} caller=(\w+) n=(\d+)", json.dumps(call.body))
        if match and call.path.endswith("/chat/completions"):
            count += 1
            seen[match.group(1)].add(call.authorization)
    assert count == 1000
    assert seen["alice"] == {f"Bearer {alice_secret}"}          # never the platform key under `only`
    assert f"Bearer {alice_secret}" not in seen["bob"]          # bob never carries alice's key
    assert seen["bob"] == {PLATFORM_TOGETHER, f"Bearer {bob_secret}"}


def test_prefer_falls_back_to_platform_key_and_only_refuses(proxies, fake) -> None:  # noqa: ANN001
    a, _ = proxies
    carol = new_secret("carol-openrouter")
    dave = new_secret("dave-openrouter")
    assert put_key(a, "sk-carol", "openrouter", carol, policy="prefer").status_code == 200
    assert put_key(a, "sk-dave", "openrouter", dave, policy="only").status_code == 200
    fake.provider.rejected_keys.update({carol, dave})  # both keys revoked at the provider afterwards

    response = chat(a, "sk-carol", OPENROUTER, "carol-prefer")
    assert response.status_code == 200, response.text
    assert response.headers["x-litellm-plugins-byok"] == "false"  # served with the platform key: charged
    assert [(c.authorization, c.status) for c in calls_tagged(fake, "carol-prefer")] == [
        (f"Bearer {carol}", 401), (PLATFORM_OPENROUTER, 200)]

    refused = chat(a, "sk-dave", OPENROUTER, "dave-only")
    assert refused.status_code == 401, refused.text
    error = refused.json()["error"]
    assert error["type"] == "byok_key_rejected" and "only" in error["message"] and "openrouter" in error["message"]
    assert dave not in refused.text
    assert [c.authorization for c in calls_tagged(fake, "dave-only")] == [f"Bearer {dave}"]

    tested = record(a.client("sk-dave").post("/plugins/byok/keys/openrouter/test")).json()
    assert tested["ok"] is False and tested["message"] == "the provider refused the key"


async def test_credits_charge_nothing_for_byok_and_usage_marks_it(proxies, fake, module_dsn) -> None:  # noqa: ANN001
    """Credits is on in proxy_config.yaml: a BYOK call charges 0 and its usage row says byok; the
    `prefer` fallback served with the platform key is charged like any platform call."""
    a, _ = proxies
    fake.provider.rejected_keys.add(next(s for s in SECRETS if s.startswith("sk-carol-openrouter")))
    ids = {name: f"byok-{name}-{uuid.uuid4().hex[:8]}" for name in ("alice", "carol", "bob")}
    with a.client("sk-alice") as client:
        byok_call = record(client.post("/v1/chat/completions", headers={"x-litellm-call-id": ids["alice"]}, json={
            "model": TOGETHER, "messages": [{"role": "user", "content": "alice-credits"}]}))
    with a.client("sk-carol") as client:
        fallback_call = record(client.post("/v1/chat/completions", headers={"x-litellm-call-id": ids["carol"]}, json={
            "model": OPENROUTER, "messages": [{"role": "user", "content": "carol-credits"}]}))
    with a.client("sk-bob") as client:
        platform_call = record(client.post("/v1/chat/completions", headers={"x-litellm-call-id": ids["bob"]}, json={
            "model": OPENAI, "messages": [{"role": "user", "content": "bob-credits"}]}))
    assert byok_call.status_code == fallback_call.status_code == platform_call.status_code == 200
    assert byok_call.headers["x-litellm-plugins-byok"] == "true"
    assert Decimal(byok_call.headers.get("x-litellm-plugins-credits-charged", "0")) == 0
    assert fallback_call.headers["x-litellm-plugins-byok"] == "false"
    conn = await asyncpg.connect(module_dsn)
    try:
        rows: dict[str, asyncpg.Record] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = await conn.fetch(
                "SELECT call_id, byok, credits_charged, status, provider FROM litellm_plugins.usage_log "
                "WHERE call_id = ANY($1::text[]) AND status = 'success'", list(ids.values()))
            rows = {r["call_id"]: r for r in found}
            if len(rows) == 3:
                break
            await asyncio.sleep(0.3)
    finally:
        await conn.close()
    assert len(rows) == 3, rows
    alice, carol, bob = rows[ids["alice"]], rows[ids["carol"]], rows[ids["bob"]]
    assert alice["byok"] is True and alice["credits_charged"] == 0
    assert carol["byok"] is False and carol["credits_charged"] > 0   # prefer fell back: charged
    assert bob["byok"] is False and bob["credits_charged"] > 0


def test_401_storm_on_a_user_key_does_not_cool_down_the_platform_deployment(proxies, fake) -> None:  # noqa: ANN001
    a, _ = proxies
    # Control: the same storm with the *platform* key does put a single-deployment group in
    # cooldown (LiteLLM cools down 401s), so the assertion below can fail.
    fake.provider.fail(401, times=6, models={FIREWORKS_MODEL})
    for n in range(6):
        chat(a, "sk-bob", FIREWORKS, f"control-storm-{n}")
    fake.provider.clear_failures()
    after_control = chat(a, "sk-bob", FIREWORKS, "control-after")
    control_cooled = after_control.status_code != 200 or not calls_tagged(fake, "control-after")

    erin = new_secret("erin-deepinfra")
    assert put_key(a, "sk-erin", "deepinfra", erin, policy="only").status_code == 200
    fake.provider.rejected_keys.add(erin)
    for n in range(12):
        assert chat(a, "sk-erin", DEEPINFRA, f"erin-storm-{n}").status_code == 401
    after = chat(a, "sk-bob", DEEPINFRA, "bob-after-storm")
    assert after.status_code == 200, after.text
    assert [c.authorization for c in calls_tagged(fake, "bob-after-storm")] == [PLATFORM_DEEPINFRA]
    assert control_cooled, "control: a platform-key 401 storm should have cooled the deployment down"


def test_delete_and_replace_take_effect_on_the_other_instance(proxies, fake) -> None:  # noqa: ANN001
    a, b = proxies
    first = new_secret("frank-1")
    second = new_secret("frank-2")
    assert put_key(a, "sk-carol", "openai", first, policy="prefer").status_code == 200
    # Warm the caches of B's workers with the first key (new connections spread over both).
    for m in range(8):
        assert chat(b, "sk-carol", OPENAI, f"b-warm-{m}").status_code == 200
        assert [c.authorization for c in calls_tagged(fake, f"b-warm-{m}")] == [f"Bearer {first}"]

    replaced = put_key(a, "sk-carol", "openai", second, policy="prefer")
    assert replaced.status_code == 200 and replaced.json()["replaced"] is True
    _eventually(lambda n: chat(b, "sk-carol", OPENAI, f"b-replaced-{n}"), fake, "b-replaced", f"Bearer {second}")

    deleted = record(a.client("sk-carol").delete("/plugins/byok/keys/openai"))
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    _eventually(lambda n: chat(b, "sk-carol", OPENAI, f"b-deleted-{n}"), fake, "b-deleted",
                "Bearer sk-platform-openai")


def _eventually(call, fake, tag: str, expected: str, within_s: float = 2.0) -> None:  # noqa: ANN001
    """Within ``within_s`` the change is visible, and then stays visible on every worker."""
    deadline = time.monotonic() + within_s
    n = 0
    while True:
        response = call(n)
        assert response.status_code == 200, response.text
        got = [c.authorization for c in calls_tagged(fake, f"{tag}-{n}")]
        if got == [expected]:
            break
        assert time.monotonic() < deadline, f"still {got} after {within_s}s"
        n += 1
        time.sleep(0.1)
    for m in range(n + 1, n + 9):  # several more requests, spread over B's two workers
        assert call(m).status_code == 200
        assert [c.authorization for c in calls_tagged(fake, f"{tag}-{m}")] == [expected]


async def test_audit_records_operations_without_secrets(proxies, module_dsn) -> None:  # noqa: ANN001
    a, _ = proxies
    await asyncio.sleep(2.5)  # first-use rows are flushed every 2 s
    rows = record(a.client("sk-carol").get("/plugins/byok/audit")).json()["data"]
    actions = {(r["provider"], r["action"]) for r in rows}
    assert {("openrouter", "add"), ("openai", "add"), ("openai", "replace"), ("openai", "delete"),
            ("openrouter", "first_use")} <= actions, actions
    assert all(r["actor"] == "user:carol" for r in rows)
    conn = await asyncpg.connect(module_dsn)
    try:
        alice_uses = await conn.fetchval(
            "SELECT count(*) FROM litellm_plugins.byok_audit WHERE account = 'user:alice' AND action = 'first_use'")
        tests = await conn.fetchval(
            "SELECT count(*) FROM litellm_plugins.byok_audit WHERE action = 'test'")
        last_used = await conn.fetchval(
            "SELECT last_used_at FROM litellm_plugins.byok_keys WHERE account = 'user:alice'")
    finally:
        await conn.close()
    assert alice_uses == 1  # once per day, though alice made ~500 calls on two instances
    assert tests >= 2 and last_used is not None
    listed = record(a.client("sk-alice").get("/plugins/byok/keys")).json()["data"]
    assert listed[0]["last_used_at"] is not None


def test_streaming_with_a_user_key(proxies, fake) -> None:  # noqa: ANN001
    a, _ = proxies
    with a.client("sk-alice") as client, client.stream("POST", "/v1/chat/completions", json={
            "model": TOGETHER, "stream": True, "messages": [{"role": "user", "content": "alice-stream"}]}) as response:
        text = "".join(response.iter_text())
        RESPONSES.append(text)
        assert response.status_code == 200
    assert "[DONE]" in text
    alice_secret = next(s for s in SECRETS if s.startswith("sk-alice-together"))
    assert [c.authorization for c in calls_tagged(fake, "alice-stream")] == [f"Bearer {alice_secret}"]
    time.sleep(1.0)  # let the stream's success logging run before the secrecy scan


def test_user_key_failing_on_a_fallback_hop_does_not_cool_down_the_platform_deployment(proxies, fake) -> None:  # noqa: ANN001
    """`balanced` = gpt-4o-mini, then openrouter-llama-3.1-70b, ... Frank's own keys for both
    providers are refused: his primary attempt fails, and so does the *fallback hop*, which LiteLLM's
    fallback path would cool down for everyone (> allowed_fails=3 failures in a minute)."""
    a, _ = proxies
    # Control: the same walk where the hop fails with the *platform* key does cool the hop's
    # deployment down, so the assertion below can fail.
    fake.provider.fail(401, models={"claude-sonnet-4-20250514", "gpt-4o"})
    for n in range(4):  # 4 > allowed_fails; < health's failure_threshold (5), so only LiteLLM reacts
        chat(a, "sk-frank", "precision", f"frank-control-{n}")  # claude-sonnet-4 -> gpt-4o -> gpt-4.1
    fake.provider.clear_failures()
    assert [c.model for c in calls_tagged(fake, "frank-control-0")][:2] == ["claude-sonnet-4-20250514", "gpt-4o"]
    control = chat(a, "sk-bob", "gpt-4o", "bob-control-after")
    control_cooled = control.status_code != 200 or not calls_tagged(fake, "bob-control-after")

    # Every provider of the chain refuses Frank's key, so each hop fails *with its nested fallbacks*
    # and LiteLLM's fallback loop calls fallback_event_handlers._trigger_cooldown_for_failed_deployment
    # on the hop's deployment -- a path that never asks the attempt's own cooldown_time.
    for provider in ("openai", "openrouter", "deepinfra", "fireworks_ai", "groq"):
        refused = new_secret(f"frank-{provider}")
        r = put_key(a, "sk-frank", provider, refused, policy="only", validate=False)
        assert r.status_code == 200, r.text
        fake.provider.rejected_keys.add(refused)
    for n in range(5):
        assert chat(a, "sk-frank", "balanced", f"frank-hop-{n}").status_code == 401
    hops = [c for n in range(5) for c in calls_tagged(fake, f"frank-hop-{n}")]
    assert {c.model for c in hops} >= {"gpt-4o-mini", "meta-llama/llama-3.1-70b-instruct"}, \
        [c.model for c in hops]
    assert not [c for c in hops if "sk-platform" in c.authorization]  # `only`: never a platform key
    for group, platform in ((OPENROUTER, PLATFORM_OPENROUTER), ("deepinfra-llama-3.3-70b", PLATFORM_DEEPINFRA)):
        after = chat(a, "sk-bob", group, f"bob-after-hop-storm-{group}")
        assert after.status_code == 200, (group, after.text)
        assert [c.authorization for c in calls_tagged(fake, f"bob-after-hop-storm-{group}")] == [platform]
    assert control_cooled, "control: platform-key failures on a fallback hop should cool the deployment down"


# ---- encryption-key rotation (last: it changes what proxy A can decrypt) ---------------------------

async def test_rotate_while_serving_then_new_key_only_instance(proxies, start_proxy, probe_file, fake,
                                                               module_dsn, module_redis_prefix, workdir) -> None:  # noqa: ANN001
    a, b = proxies
    alice_secret = next(s for s in SECRETS if s.startswith("sk-alice-together"))
    conn = await asyncpg.connect(module_dsn)
    try:
        before = dict(await conn.fetch(
            "SELECT enc_key_id, count(*) FROM litellm_plugins.byok_keys GROUP BY 1"))
    finally:
        await conn.close()
    assert len(before) == 1  # everything so far was written by A, under the old key

    # Keep serving through B (which knows both keys) while the rotation runs.
    stop = asyncio.Event()
    served: list[tuple[int, str]] = []

    async def traffic() -> None:
        async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": "Bearer sk-alice"}, timeout=30) as c:
            n = 0
            while not stop.is_set():
                r = await c.post("/v1/chat/completions", json={
                    "model": TOGETHER, "messages": [{"role": "user", "content": f"during-rotate-{n}"}]})
                served.append((r.status_code, f"during-rotate-{n}"))
                n += 1

    task = asyncio.create_task(traffic())
    await asyncio.sleep(0.3)
    cli = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("litellm-plugins")), "--config", str(a.config_path), "byok", "rotate",
        "--batch-size", "2",
        env={**os.environ, **a.env, ENV_VAR: f"{ENC_KEY_2},{ENC_KEY_1}", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output = (await cli.communicate())[0].decode()
    RESPONSES.append(output)
    await asyncio.sleep(0.5)
    stop.set()
    await task
    assert cli.returncode == 0, output
    assert "rotated" in output
    assert served and all(status == 200 for status, _ in served), served[:3]
    for _, tag in served:
        assert [c.authorization for c in calls_tagged(fake, tag)] == [f"Bearer {alice_secret}"]

    # Idempotent: a second run has nothing left to do (resumability itself: tests/test_byok_unit.py).
    from litellm_plugins.byok import store
    from litellm_plugins.byok.crypto import Cipher
    pool = await asyncpg.create_pool(module_dsn, min_size=1, max_size=2,
                                     server_settings={"search_path": "litellm_plugins"})
    try:
        assert await store.rotate(pool, Cipher([ENC_KEY_2, ENC_KEY_1])) == (0, 0)
    finally:
        await pool.close()

    # An instance that only has the new key serves every stored key.
    c = _start(start_proxy, probe_file, "byok_c", ENC_KEY_2)
    assert chat(c, "sk-alice", TOGETHER, "c-new-key-only").status_code == 200
    assert [x.authorization for x in calls_tagged(fake, "c-new-key-only")] == [f"Bearer {alice_secret}"]

    # A (old key only, never rolled) can no longer decrypt: `only` refuses rather than using the
    # platform key (the rotate CLI told every worker to drop its cache).
    refused = chat(a, "sk-alice", TOGETHER, "a-old-key-only")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["type"] == "byok_key_undecryptable"
    assert not calls_tagged(fake, "a-old-key-only")


# ---- secrecy: scan everything captured during the module ---------------------------------------

async def test_no_plaintext_key_anywhere(proxies, probe_file, module_dsn, module_redis_prefix, workdir) -> None:  # noqa: ANN001
    assert len(SECRETS) >= 8
    a, b = proxies
    # Operator-facing outputs too: health, readiness, usage, every account's key metadata and audit.
    with a.client(MASTER_KEY) as admin:
        for path in ("/plugins/health", "/plugins/ready", "/plugins/usage", "/plugins/byok/keys",
                     "/plugins/byok/audit?limit=1000", "/plugins/credits/balance"):
            response = record(admin.get(path))
            assert response.status_code < 500 or path == "/plugins/ready", (path, response.text)
    for proxy in (a, b):  # BYOK's supervised jobs never crashed during the module
        tasks = httpx.get(proxy.url + "/plugins/ready", timeout=10).json()["tasks"]
        for name in ("byok-invalidation", "byok-last-used"):
            assert tasks[name]["running"] and tasks[name]["restarts"] == 0, tasks[name]
    haystacks: dict[str, str] = {}
    for log_path in workdir.glob("*.log"):
        if log_path != probe_file:
            haystacks[log_path.name] = log_path.read_text(errors="replace")
    assert {"byok_a.log", "byok_b.log", "byok_c.log"} <= set(haystacks)
    haystacks["responses"] = "\n".join(RESPONSES)
    conn = await asyncpg.connect(module_dsn)
    try:
        tables = [r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'litellm_plugins'")]
        for table in tables:
            rows = await conn.fetch(f'SELECT row_to_json(t)::text AS j FROM litellm_plugins."{table}" t')
            haystacks[f"table {table}"] = "\n".join(r["j"] for r in rows)
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        values = []
        async for key in client.scan_iter(match=module_redis_prefix + "*", count=1000):
            if (await client.type(key)) == b"string":
                values.append(repr(await client.get(key)))
        haystacks["redis"] = "\n".join(values)
    finally:
        await client.aclose()
    probe_text = probe_file.read_text(errors="replace")
    assert "success\t" in probe_text and "failure\t" in probe_text  # the probe did see payloads
    assert "pre_api_call\t" in probe_text
    haystacks["logging payloads (pre-call, success, failure)"] = probe_text
    assert "byok_keys" in " ".join(haystacks) and haystacks["table byok_audit"]
    leaks = [(name, secret[:12]) for name, text in haystacks.items() for secret in SECRETS if secret in text]
    assert not leaks, leaks
