"""Microbenchmark of power-level routing: microseconds per routing decision (no network, no proxy).

Runs the real hook (``RoutingHook.async_pre_call_hook`` + the response-headers hook) against the
shipped proxy_config.yaml policy and a real ``litellm.Router`` built from its model_list, with the
router's in-memory cooldowns and the health view in play. For comparison it also times LiteLLM's own
``_async_get_cooldown_deployments`` (what a per-request cooldown lookup through LiteLLM would cost).

    python benchmarks/micro_routing.py [--n 20000]
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import litellm  # noqa: E402
import yaml  # noqa: E402
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from litellm_plugins.core import runtime  # noqa: E402
from litellm_plugins.core.settings import parse_settings  # noqa: E402
from litellm_plugins.routing import availability, hook  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def timed(label: str, n: int, make_args, fn) -> None:
    samples: list[float] = []
    for _ in range(n):
        args = make_args()
        t0 = time.perf_counter_ns()
        await fn(*args)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    print(f"{label:<58} p50 {statistics.median(samples):7.2f} us   p99 {percentile(samples, 0.99):7.2f} us")


async def main(n: int) -> None:
    config = yaml.safe_load((ROOT / "proxy_config.yaml").read_text())
    section = copy.deepcopy(config["litellm_plugins"])
    section.update(database_url="postgresql://bench@localhost/bench", redis_url="redis://localhost:6379/0")
    settings = parse_settings(section)
    settings.routing.check_config(config)
    rt = runtime.Runtime(settings=settings, config=config, pool=None, redis=None)  # type: ignore[arg-type]
    runtime.install(rt)
    await hook.start(rt)

    model_list = copy.deepcopy(config["model_list"])
    for entry in model_list:
        entry["litellm_params"]["api_key"] = "sk-bench"
        entry["litellm_params"].pop("api_base", None)
    router = litellm.Router(model_list=model_list)
    import litellm.proxy.proxy_server as proxy_server
    proxy_server.llm_router = router
    # one eco candidate cooling down, so the decision walks past it as it would under failures
    eco_first = settings.routing.levels["eco"][0]
    first_id = next(d["model_info"]["id"] for d in router.model_list if d["model_name"] == eco_first)

    rh = hook.routing_hook
    enterprise = UserAPIKeyAuth(api_key="h", token="h", user_id="u", metadata={"tier": "enterprise"},
                                user_role=LitellmUserRoles.INTERNAL_USER)
    free = UserAPIKeyAuth(api_key="h", token="h", user_id="u", metadata={}, user_role=LitellmUserRoles.INTERNAL_USER)
    messages = [{"role": "user", "content": "hello"}]

    def request(model: str, header: str | None = "precision", **extra):
        headers = {"x-power-level": header} if header else {}
        return lambda: ({"model": model, "messages": messages, "metadata": {},
                         "proxy_server_request": {"headers": headers}, **extra},)

    async def pre(data, auth=enterprise):
        await rh.async_pre_call_hook(auth, None, data, "acompletion")

    print(f"litellm {litellm.__version__ if hasattr(litellm, '__version__') else ''}; n={n}; "
          f"{len(router.model_list)} deployments")
    await timed("pre_call: model=eco (enterprise key)", n, request("eco"), pre)
    await timed("pre_call: model=auto + X-Power-Level header", n, request("auto"), pre)
    await timed("pre_call: model=auto + body power_level (free tier)", n,
                request("auto", header=None, power_level="eco"), lambda d: pre(d, free))
    await timed("pre_call: custom model (gpt-4o)", n, request("gpt-4o"), pre)
    # accounts' saved default levels (web console): a dict lookup, only for `auto` naming no level
    await timed("pre_call: model=auto, no level named, no saved defaults", n,
                request("auto", header=None), lambda d: pre(d, free))
    defaults = hook.current_state().defaults
    for i in range(10_000):
        defaults.put(f"user:other{i}", "eco")
    defaults.put("user:u", "eco")
    await timed("pre_call: model=auto, no level named, 10,001 saved defaults", n,
                request("auto", header=None), lambda d: pre(d, free))
    defaults.put("user:u", None)
    router.cooldown_cache.add_deployment_to_cooldown(first_id, Exception("bench"), 500, cooldown_time=600)
    await timed("pre_call: model=eco, first candidate cooling down", n, request("eco"), pre)

    data = {"model": "eco", "messages": messages, "metadata": {}}
    await pre(data)

    async def headers(d):
        await rh.async_post_call_response_headers_hook(d, enterprise, None, None, {"model_id": first_id})
    await timed("response headers hook", n, lambda: (data,), headers)

    snap = availability.snapshot()
    assert snap is not None and snap.blocked(eco_first, frozenset(), time.time()) is not None

    # capability-aware routing (issue 8): typical request, and requests that need filtering
    router.cooldown_cache.in_memory_cache.flush_cache()
    image = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                          {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    typical = [{"role": "system", "content": "You are helpful." * 20},
               *({"role": "user" if i % 2 else "assistant", "content": "some earlier turn " * 30}
                 for i in range(8))]

    def typical_request():
        return ({"model": "eco", "messages": typical, "max_tokens": 512, "metadata": {},
                 "proxy_server_request": {"headers": {}}},)
    await timed("capability check ON:  eco, typical 9-message chat", n, typical_request, pre)
    await timed("capability check ON:  eco + image (skips 3 text-only)", n,
                lambda: ({"model": "eco", "messages": image, "metadata": {}},), pre)
    await timed("capability check ON:  eco + tools", n,
                lambda: ({"model": "eco", "messages": messages, "tools": tools, "metadata": {}},), pre)
    off = copy.deepcopy(section)
    off["routing"]["capability_check"] = False
    rt_off = runtime.Runtime(settings=parse_settings(off), config=config, pool=None, redis=None)  # type: ignore[arg-type]
    runtime.install(rt_off)
    await hook.start(rt_off)
    await timed("capability check OFF: eco, typical 9-message chat", n, typical_request, pre)
    runtime.install(rt)
    await hook.start(rt)

    from litellm.router_utils.cooldown_handlers import _async_get_cooldown_deployments

    async def litellm_lookup():
        await _async_get_cooldown_deployments(router, None)
    await timed("for comparison: LiteLLM _async_get_cooldown_deployments", n, lambda: (), litellm_lookup)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    asyncio.run(main(parser.parse_args().n))
