"""Health pieces against real Postgres/Redis, without a proxy: uptime math on a known timeline,
percentiles, circuit transitions, the real hook's classification (BYOK 401 storm), the filter."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import asyncpg
import litellm
import pytest

from litellm_plugins.core import runtime
from litellm_plugins.core.context import RequestContext
from litellm_plugins.core.db import create_pool
from litellm_plugins.core.errors import SettingsError
from litellm_plugins.core.migrator import migrate
from litellm_plugins.core.redis import create_client
from litellm_plugins.core.settings import PluginSettings
from litellm_plugins.health import service as health_service
from litellm_plugins.health import store, view
from litellm_plugins.health.api import describe
from litellm_plugins.health.circuit import Circuits
from litellm_plugins.health.deployments import from_entry
from litellm_plugins.health.hook import health_hook
from litellm_plugins.health.settings import HealthSettings
from tests.support.services import REDIS_URL, redis_prefix

H = timedelta(hours=1)
D = timedelta(days=1)


# ---- uptime math (pure) ---------------------------------------------------------------------------
def test_uptime_percent_pure():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    E = store.Event
    # up from t0, down [t0+6h, t0+9h), up again: over [t0, t0+12h] -> 9/12
    events = [E(t0, True), E(t0 + 6 * H, False), E(t0 + 9 * H, True)]
    assert store.uptime_percent(events, t0, t0 + 12 * H) == 75.0
    # window starting inside the down period (state at start = the event before it)
    assert store.uptime_percent(events[1:], t0 + 8 * H, t0 + 12 * H) == 75.0
    # history starts after the window start: only the covered part counts
    assert store.uptime_percent([E(t0 + 10 * H, True)], t0, t0 + 12 * H) == 100.0
    assert store.uptime_percent([], t0, t0 + H) is None
    assert store.uptime_percent([E(t0 + 2 * H, False)], t0, t0 + H) is None


# ---- history against Postgres: a known timeline ---------------------------------------------------
@pytest.fixture
async def pool(database: str):
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(database, 1, 4)
    yield pool
    await pool.close()


async def _event(pool, model_id, at, state, up):
    await pool.execute("INSERT INTO health_events (model_id, model_group, provider, state, up, at) "
                       "VALUES ($1, 'g', 'p', $2, $3, $4)", model_id, state, up, at)


async def test_history_uptime_and_percentiles_exact(pool):
    T = datetime.now(timezone.utc).replace(microsecond=0)
    # m1: known since 40 d; down 12 h (20 d ago), 6 h forced down (3 d ago), 2 h open/half-open (10 h ago)
    for at, state, up in [(T - 40 * D, "closed", True), (T - 20 * D, "open", False),
                          (T - 20 * D + 12 * H, "closed", True), (T - 3 * D, "forced_down", False),
                          (T - 3 * D + 6 * H, "closed", True), (T - 10 * H, "open", False),
                          (T - 9 * H, "half_open", False), (T - 8 * H, "closed", True)]:
        await _event(pool, "m1", at, state, up)
    # m2: first seen 2 d ago; opens exactly at the 24 h window start, closed 12 h later
    for at, state, up in [(T - 2 * D, "closed", True), (T - 1 * D, "open", False),
                          (T - 12 * H, "closed", True)]:
        await _event(pool, "m2", at, state, up)
    # probes of m1: ok latencies 10..100 in the last day, a failure, an old sample outside 24 h
    for i in range(10):
        await pool.execute("INSERT INTO health_probes (model_id, model_group, provider, prober, ok, latency_ms, at) "
                           "VALUES ('m1', 'g', 'p', 'x', true, $1, $2)", (i + 1) * 10, T - (i + 1) * H)
    await pool.execute("INSERT INTO health_probes (model_id, model_group, provider, prober, ok, latency_ms, at) "
                       "VALUES ('m1', 'g', 'p', 'x', false, NULL, $1)", T - H)
    await pool.execute("INSERT INTO health_probes (model_id, model_group, provider, prober, ok, latency_ms, at) "
                       "VALUES ('m1', 'g', 'p', 'x', true, 1000, $1)", T - 2 * D)

    result = await store.history(pool, ["m1", "m2", "m3"], now=T)

    assert result["m1"]["uptime"] == {"24h": round(100 * 22 / 24, 4), "7d": round(100 * 160 / 168, 4),
                                      "30d": round(100 * 700 / 720, 4)}
    assert result["m2"]["uptime"] == {"24h": 50.0, "7d": 75.0, "30d": 75.0}
    assert result["m3"]["uptime"] == {"24h": None, "7d": None, "30d": None}
    assert result["m1"]["latency_p50_ms"] == 55.0
    assert result["m1"]["latency_p95_ms"] == 95.5
    assert result["m1"]["probe_samples_24h"] == 10
    assert result["m2"]["latency_p50_ms"] is None

    # pruning keeps the last event before the cut (the state at the start of the oldest window)
    await _event(pool, "m1", T - 50 * D, "open", False)
    await store.prune(pool, 35)
    oldest = await pool.fetch("SELECT at, state FROM health_events WHERE model_id = 'm1' ORDER BY at LIMIT 2")
    assert [r["state"] for r in oldest] == ["closed", "open"] and oldest[0]["at"] == T - 40 * D
    assert (await store.history(pool, ["m1"], now=T))["m1"]["uptime"] == result["m1"]["uptime"]

    # first-seen rows only for deployments without a timeline
    assert await store.record_first_seen(pool, [("m1", "g", "p"), ("m4", "g", "p")]) == 1


# ---- circuit transitions in Redis -------------------------------------------------------------------
@pytest.fixture
async def circuits():
    async with redis_prefix() as prefix:
        client = create_client(REDIS_URL)
        yield Circuits(client, prefix)
        await client.aclose()


async def test_circuit_transitions(circuits):
    kw = dict(threshold=3, cooldown_s=1.0, alpha=0.5)
    t = 1_000_000
    for i in range(2):
        tr = await circuits.record("d1", False, source="traffic", now=t + i, reason="traffic: HTTP 500", **kw)
        assert tr.new == "closed"
    tr = await circuits.record("d1", False, source="traffic", now=t + 2, reason="traffic: HTTP 500", **kw)
    assert (tr.old, tr.new) == ("closed", "open")
    # a probe success does not close a circuit opened by real traffic
    tr = await circuits.record("d1", True, source="probe", threshold=2, cooldown_s=1.0, alpha=0.5, now=t + 3)
    assert tr.new == "open"
    # cool-down over: the prober's tick moves it to half_open; a failure re-opens immediately
    assert await circuits.tick(["d1", "nope"], 1.0, now=t + 500) == []
    assert await circuits.tick(["d1", "nope"], 1.0, now=t + 1002) == ["d1"]
    tr = await circuits.record("d1", False, source="traffic", now=t + 1003, **kw)
    assert (tr.old, tr.new) == ("half_open", "open")
    # next trial succeeds (lazy half-open at the outcome itself) -> closed, counters reset
    tr = await circuits.record("d1", True, source="traffic", latency_ms=100, now=t + 2100, **kw)
    assert (tr.old, tr.new) == ("open", "closed")
    fields = (await circuits.read(["d1"]))["d1"]
    assert fields["fails"] == "0" and fields["reason"] == ""
    assert float(fields["err"]) == pytest.approx(0.5 * 0 + 0.5 * 1.0)  # EWMA after 4 failures, 1 success
    # a batch of 2 successes weighs 1 - (1 - alpha)^2 = 0.75
    await circuits.record("d1", True, source="traffic", latency_ms=200, now=t + 2200, count=2, **kw)
    fields = (await circuits.read(["d1"]))["d1"]
    assert float(fields["err"]) == pytest.approx(0.25 * 0.5)
    assert float(fields["lat"]) == pytest.approx(0.75 * 200 + 0.25 * 100)
    # a success resets the consecutive count: fail, fail, ok, fail, fail stays closed
    for ok in (False, False, True, False, False):
        tr = await circuits.record("d2", ok, source="traffic", now=t, **kw)
    assert tr.new == "closed"
    # probe failures open with their own threshold; a probe success closes what probes opened
    p = dict(threshold=2, cooldown_s=1.0, alpha=0.5)
    await circuits.record("d3", False, source="probe", now=t, reason="probe: HTTP 503", **p)
    tr = await circuits.record("d3", False, source="probe", now=t + 1, reason="probe: HTTP 503", **p)
    assert tr.new == "open"
    assert describe((await circuits.read(["d3"]))["d3"], 1000, t + 10)["reason"] == "probe: HTTP 503"
    tr = await circuits.record("d3", True, source="probe", now=t + 1500, **p)
    assert (tr.old, tr.new) == ("open", "closed")


async def test_concurrent_failures_count_exactly(circuits):
    """Many workers reporting at once: the Lua script loses no update."""
    await asyncio.gather(*(circuits.record("c", False, source="traffic", threshold=1000, cooldown_s=1,
                                           alpha=0.2) for _ in range(80)))
    assert (await circuits.read(["c"]))["c"]["fails"] == "80"


# ---- the real hook: classification, BYOK storm ----------------------------------------------------
class FakeStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"Incorrect API key provided: sk-user-secret-{status_code}")
        self.status_code = status_code


def _failure_kwargs(model_id: str, status: int | None, byok: bool = False) -> dict:
    ctx = RequestContext(byok_used=True) if byok else RequestContext()
    exc = FakeStatusError(status) if status is not None else ConnectionError("boom")
    return {"exception": exc, "standard_logging_object": {"model_id": model_id},
            "litellm_params": {"metadata": {"litellm_plugins": ctx}, "model_info": {"id": model_id}}}


@pytest.fixture
async def live_runtime(pool):
    async with redis_prefix() as prefix:
        client = create_client(REDIS_URL)
        settings = PluginSettings(database_url="postgresql://unused", redis_url=REDIS_URL,
                                  redis_key_prefix=prefix,
                                  health=HealthSettings(enabled=True, failure_threshold=3, cooldown_s=60))
        rt = runtime.Runtime(settings=settings, config={}, pool=pool, redis=client)
        previous = runtime.current()
        runtime.install(rt)
        health_service._service = None
        try:
            yield rt
        finally:
            runtime.install(previous)
            health_service._service = None
            view.publish(frozenset(), frozenset())
            await client.aclose()


async def _state(rt, model_id):
    return (await health_service.get(rt).circuits.read([model_id]))[model_id]


async def test_byok_401_storm_does_not_open_the_circuit(live_runtime):
    rt = live_runtime
    for _ in range(50):
        await health_hook.async_log_failure_event(_failure_kwargs("dep-a", 401, byok=True), None, None, None)
    assert await _state(rt, "dep-a") == {}  # not even counted
    # caller errors do not count either
    for status in (400, 404, 413, 422):
        for _ in range(5):
            await health_hook.async_log_failure_event(_failure_kwargs("dep-a", status), None, None, None)
    assert await _state(rt, "dep-a") == {}
    # the same 401 with the platform key does: the deployment is unusable for everyone
    for _ in range(3):
        await health_hook.async_log_failure_event(_failure_kwargs("dep-a", 401), None, None, None)
    state = await _state(rt, "dep-a")
    assert state["state"] == "open"
    assert state["reason"] == "traffic: HTTP 401 (FakeStatusError)"  # never the provider's message
    assert view.unhealthy_model_ids() == frozenset({"dep-a"})  # published to this worker at once
    events = await rt.pool.fetch("SELECT state, up, reason FROM health_events WHERE model_id = 'dep-a'")
    assert [(e["state"], e["up"]) for e in events] == [("open", False)]
    # 429, 5xx and connection errors count; a success resets the count
    for status in (429, 503):
        await health_hook.async_log_failure_event(_failure_kwargs("dep-b", status), None, None, None)
    await health_hook.async_log_failure_event(_failure_kwargs("dep-b", None), None, None, None)
    assert (await _state(rt, "dep-b"))["state"] == "open"
    # a failure without a deployment (rejected before routing) is ignored
    await health_hook.async_log_failure_event({"exception": FakeStatusError(500)}, None, None, None)
    # success with latency feeds the EWMA
    start = datetime.now(timezone.utc)
    await health_hook.async_log_success_event(
        {"standard_logging_object": {"model_id": "dep-c"}}, None, start, start + timedelta(milliseconds=250))
    assert await _state(rt, "dep-c") == {}  # successes are batched in the worker...
    await health_service.get(rt).flush()       # ...and flushed by the refresher
    assert float((await _state(rt, "dep-c"))["lat"]) == pytest.approx(250.0)
    # a failure flushes the successes before it, so order within a worker is kept:
    # fail, fail, ok (pending), fail -> the success reset the count: 1 failure, still closed
    for ok in (False, False, True, False):
        if ok:
            await health_hook.async_log_success_event(
                {"standard_logging_object": {"model_id": "dep-d"}}, None, start, start)
        else:
            await health_hook.async_log_failure_event(_failure_kwargs("dep-d", 500), None, None, None)
    state = await _state(rt, "dep-d")
    assert state["state"] == "closed" and state["fails"] == "1"


async def test_hooks_are_noops_when_disabled(live_runtime):
    rt = live_runtime
    runtime.install(runtime.Runtime(settings=rt.settings.model_copy(update={"health": HealthSettings()}),
                                    config={}, pool=rt.pool, redis=rt.redis))
    for _ in range(5):
        await health_hook.async_log_failure_event(_failure_kwargs("dep-z", 500), None, None, None)
    runtime.install(rt)
    assert await _state(rt, "dep-z") == {}


# ---- the filter -----------------------------------------------------------------------------------
def _dep(model_id: str) -> dict:
    return {"model_name": "g", "litellm_params": {"model": "openai/x"}, "model_info": {"id": model_id}}


async def test_filter_drops_open_but_never_black_holes():
    deps = [_dep("a"), _dep("b"), _dep("c")]
    try:
        view.publish(frozenset(), frozenset())
        assert await health_hook.async_filter_deployments("g", deps, None) is deps
        view.publish(frozenset({"a"}))
        assert [d["model_info"]["id"] for d in await health_hook.async_filter_deployments("g", deps, None)] == ["b", "c"]
        assert view.unhealthy_model_ids() == frozenset({"a"})
        # all open: keep them all rather than fail the request
        view.publish(frozenset({"a", "b", "c"}))
        assert await health_hook.async_filter_deployments("g", deps, None) == deps
        # forced down stays out even then
        view.publish(frozenset({"a", "b"}), frozenset({"c"}))
        assert view.unhealthy_model_ids() == frozenset({"a", "b", "c"})
        assert [d["model_info"]["id"] for d in await health_hook.async_filter_deployments("g", deps, None)] == ["a", "b"]
        # every deployment forced down: a clean 503, not LiteLLM's "no deployments" rate-limit error
        view.publish(frozenset(), frozenset({"a", "b", "c"}))
        with pytest.raises(litellm.ServiceUnavailableError, match="forced down"):
            await health_hook.async_filter_deployments("g", deps, None)
    finally:
        view.publish(frozenset(), frozenset())


# ---- settings and probe targets ---------------------------------------------------------------------
def test_settings_check_config():
    config = {"model_list": [{"model_name": "gpt-4o"}]}
    HealthSettings(enabled=True, probe_exclude_model_groups=("gpt-4o",)).check_config(config)
    with pytest.raises(SettingsError, match=r"^litellm_plugins.health.probe_exclude_model_groups\[0\]: "):
        HealthSettings(probe_exclude_model_groups=("nope",)).check_config(config)
    with pytest.raises(SettingsError, match=r"^litellm_plugins.health.lease_ttl_s: "):
        HealthSettings(lease_ttl_s=5, probe_timeout_s=5).check_config(config)


def test_probe_targets_and_masking(monkeypatch):
    monkeypatch.setenv("HEALTH_TEST_KEY", "sk-secret-groq-1234")
    groq = from_entry({"model_name": "g", "model_info": {"id": "1"},
                       "litellm_params": {"model": "groq/llama", "api_key": "os.environ/HEALTH_TEST_KEY"}})
    assert groq.probe_url == "https://api.groq.com/openai/v1/models"
    assert dict(groq.probe_headers) == {"authorization": "Bearer sk-secret-groq-1234"}
    assert "sk-secret" not in repr(groq.public()) and groq.endpoint == "https://api.groq.com"
    claude = from_entry({"model_name": "c", "model_info": {"id": "2"},
                         "litellm_params": {"model": "anthropic/claude", "api_key": "k"}})
    assert claude.probe_url == "https://api.anthropic.com/v1/models" and dict(claude.probe_headers)["x-api-key"] == "k"
    ollama = from_entry({"model_name": "o", "model_info": {"id": "3"},
                         "litellm_params": {"model": "ollama_chat/llama3", "api_base": "http://u:p@gpu:11434"}})
    assert ollama.probe_url == "http://u:p@gpu:11434/api/tags" and ollama.endpoint == "http://gpu:11434"
    demo = from_entry({"model_name": "demo", "model_info": {"id": "4"},
                       "litellm_params": {"model": "openai/demo", "mock_response": "hi"}})
    assert demo.probe_url is None
    unset = from_entry({"model_name": "v", "model_info": {"id": "5"},
                        "litellm_params": {"model": "hosted_vllm/q", "api_base": "os.environ/HEALTH_UNSET_X"}})
    assert unset.probe_url is None
    assert from_entry({"model_name": "x", "litellm_params": {}}) is None


# ---- supervised jobs ---------------------------------------------------------------------------------
async def test_jobs_are_supervised_and_a_crashed_prober_is_restarted(live_runtime, monkeypatch):
    from litellm_plugins.health import hook as hook_module
    from litellm_plugins.health.prober import Prober

    crashes = []

    async def crash_once(self, client):  # noqa: ANN001
        if not crashes:
            crashes.append(1)
            raise RuntimeError("probe round exploded")

    monkeypatch.setattr(Prober, "tick", crash_once)
    rt = live_runtime
    await hook_module.start(rt)
    try:
        for _ in range(50):
            state = rt.tasks.describe().get("health.prober", {})
            if state.get("restarts") and state.get("running"):
                break
            await asyncio.sleep(0.1)
        state = rt.tasks.describe()["health.prober"]
        assert state["restarts"] == 1 and state["running"]
        assert state["last_error"] == "RuntimeError: probe round exploded"
        assert rt.tasks.describe()["health.refresher"]["running"] and rt.tasks.healthy
        # the restarted prober got the lease back (same owner token: it renews, no double prober)
        prober = hook_module.prober_for(rt)
        assert prober is not None
        for _ in range(30):
            if prober.holding:
                break
            await asyncio.sleep(0.1)
        assert prober.holding
        holder = await rt.redis.get(f"{rt.settings.redis_key_prefix}health:prober")
        assert holder.decode() == prober.token
    finally:
        await rt.tasks.stop()
        await asyncio.sleep(0.1)
    assert await rt.redis.get(f"{rt.settings.redis_key_prefix}health:prober") is None  # released on stop


async def test_probe_of_a_broken_url_is_a_failed_probe_not_a_crash():
    import httpx

    from litellm_plugins.health.prober import probe_once

    broken = from_entry({"model_name": "b", "model_info": {"id": "9"},
                         "litellm_params": {"model": "openai/x", "api_base": "http://[::1", "api_key": "k"}})
    async with httpx.AsyncClient() as client:
        result = await probe_once(client, broken, 0.5)
    assert result.ok is False and result.error


def test_health_reports_unknown_and_byok_only_without_inventing_uptime():
    from litellm_plugins.health.api import _provider_status, describe, judge

    never = judge({**describe({}, 30000, 0), "uptime": {"24h": 100.0, "7d": 100.0, "30d": 100.0}}, {}, None)
    assert (never["status"], never["up"], never["uptime"]) == ("unknown", None, {"24h": None, "7d": None, "30d": None})
    probed = {"probe_at": "1000", "probe_ok": "1", "state": "closed"}
    seen = judge({**describe(probed, 30000, 2000), "uptime": {"24h": 100.0}}, probed, None)
    assert (seen["status"], seen["up"], seen["uptime"]) == ("healthy", True, {"24h": 100.0})
    called = {"err": "0.0"}
    assert judge(describe(called, 30000, 0), called, None)["status"] == "healthy"
    keyless = judge({**describe({}, 30000, 0), "uptime": {}}, {}, "byok_only")
    assert (keyless["status"], keyless["up"]) == ("byok_only", None)
    forced = {"forced": "down", "forced_reason": "maintenance"}
    assert judge(describe(forced, 30000, 0), forced, "byok_only")["status"] == "forced_down"
    assert _provider_status([never, seen]) == "healthy"
    assert _provider_status([never, never]) == "unknown"
    assert _provider_status([keyless, keyless]) == "byok_only"


def test_byok_only_deployments_are_never_probed():
    d = from_entry({"model_name": "g", "model_info": {"id": "1"},
                    "litellm_params": {"model": "groq/llama", "api_key": None}}, missing=("GROQ_API_KEY",))
    assert d.probe_url is None and d.byok_only and d.platform_status == "byok_only"
    assert "GROQ_API_KEY" in d.not_probed_reason(())
    local = from_entry({"model_name": "l", "model_info": {"id": "2"},
                        "litellm_params": {"model": "ollama_chat/llama3", "api_base": None}},
                       missing=("OLLAMA_API_BASE",), byok_servable=False)
    assert local.platform_status == "unconfigured" and local.probe_url is None
    hf = from_entry({"model_name": "h", "model_info": {"id": "3"},
                     "litellm_params": {"model": "huggingface/mistralai/Mistral-7B", "api_key": "hf_x"}})
    assert hf.probe_url == "https://router.huggingface.co/v1/models" and hf.not_probed_reason(()) is None
    ollama_default = from_entry({"model_name": "o", "model_info": {"id": "4"},
                                 "litellm_params": {"model": "ollama_chat/llama3"}})
    assert ollama_default.probe_url == "http://localhost:11434/api/tags"
    demo = from_entry({"model_name": "demo", "model_info": {"id": "5"},
                       "litellm_params": {"model": "openai/demo", "mock_response": "hi"}})
    assert "mock_response" in demo.not_probed_reason(())
    assert "probe_exclude" in hf.not_probed_reason(("h",))
