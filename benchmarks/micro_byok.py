"""Microbenchmark: what BYOK adds to one request with a warm cache (µs per request, p50 / p99).

Runs the real hook methods (``async_pre_call_hook`` + ``async_pre_call_deployment_hook``) against
the real per-worker cache, cipher and provider map — no proxy, no network. Postgres and Redis are
not touched on a warm path, so none are needed. Budget (issue 5): ≤ 200 µs at p50.

    python benchmarks/micro_byok.py [--iterations 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from cryptography.fernet import Fernet  # noqa: E402
from litellm.proxy._types import UserAPIKeyAuth  # noqa: E402

from litellm_plugins.byok import hook as byok  # noqa: E402
from litellm_plugins.byok.store import StoredKey  # noqa: E402
from litellm_plugins.core.settings import parse_settings  # noqa: E402

CONFIG = {"model_list": [
    {"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-platform"}},
    {"model_name": "together-llama", "litellm_params": {"model": "together_ai/meta-llama/x", "api_key": "p"}},
]}


class _Rt:
    def __init__(self) -> None:
        self.settings = parse_settings({"database_url": "postgresql://unused", "redis_url": "redis://unused",
                                        "byok": {"enabled": True, "encryption_keys": Fernet.generate_key().decode()}})
        self.config = CONFIG
        self.pool = None
        self.redis = None


def _auth(user: str) -> UserAPIKeyAuth:
    return UserAPIKeyAuth(api_key=f"hash-{user}", token=f"hash-{user}", user_id=user)


def _metadata(user: str, ctx: dict) -> dict:
    # What the proxy puts in request metadata (a subset; lookups only touch these keys).
    return {"user_api_key_user_id": user, "user_api_key_team_id": None, "user_api_key_hash": f"hash-{user}",
            "model_group": "gpt-4o-mini", "litellm_plugins": ctx}


class _LoggingObj:
    """Stands for LiteLLM's per-request Logging object (BYOK wraps its ``pre_call``)."""

    def __init__(self) -> None:
        self.model_call_details: dict = {"litellm_params": {}}

    def pre_call(self, input, api_key, model=None, additional_args=None):  # noqa: A002, ANN001, ANN201
        return None


async def one_request(h: byok.ByokHook, auth: UserAPIKeyAuth, user: str) -> None:
    ctx: dict = {}
    data = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "metadata": _metadata(user, ctx)}
    await h.async_pre_call_hook(auth, None, data, "completion")
    kwargs = {"model": "openai/gpt-4o-mini", "api_key": "sk-platform", "client": object(),
              "metadata": data["metadata"], "model_info": {"id": "abc"}, "litellm_logging_obj": _LoggingObj()}
    await h.async_pre_call_deployment_hook(kwargs, "acompletion")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()
    v = byok.Vault(_Rt())
    v.note_use = lambda account, provider: None  # type: ignore[method-assign] - measured separately below
    byok._vault = v
    h = byok.byok_hook
    with_key, without_key = "alice", "bob"
    v.cache.put(f"user:{with_key}", {"openai": StoredKey("openai", "prefer", "sk-alice-" + "x" * 40)},
                v.cache.token(f"user:{with_key}"))
    v.cache.put(f"user:{without_key}", {}, v.cache.token(f"user:{without_key}"))

    async def baseline(auth: UserAPIKeyAuth, user: str) -> None:  # same dict building, no hooks
        ctx: dict = {}
        data = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                "metadata": _metadata(user, ctx)}
        kwargs = {"model": "openai/gpt-4o-mini", "api_key": "sk-platform", "client": object(),
                  "metadata": data["metadata"], "model_info": {"id": "abc"}, "litellm_logging_obj": _LoggingObj()}
        del kwargs

    results = {}
    for label, user, fn in (("baseline (dict building only)", with_key, baseline),
                            ("caller WITH a key (inject)", with_key, one_request),
                            ("caller without keys", without_key, one_request)):
        auth = _auth(user)
        for _ in range(2000):  # warm up
            await (fn(h, auth, user) if fn is one_request else fn(auth, user))
        samples = []
        for _ in range(args.iterations):
            t0 = time.perf_counter_ns()
            await (fn(h, auth, user) if fn is one_request else fn(auth, user))
            samples.append((time.perf_counter_ns() - t0) / 1000)
        samples.sort()
        results[label] = (statistics.median(samples), samples[int(len(samples) * 0.99)])
    base = results["baseline (dict building only)"][0]
    print(f"{'path':34} {'p50 µs':>8} {'p99 µs':>8} {'p50 - baseline':>15}")
    for label, (p50, p99) in results.items():
        print(f"{label:34} {p50:8.2f} {p99:8.2f} {p50 - base:15.2f}")
    # note_use cost on its own (throttled: one dict lookup per request after the first)
    v2 = byok.Vault(_Rt())
    t0 = time.perf_counter_ns()
    for _ in range(args.iterations):
        v2.note_use("user:alice", "openai")
    print(f"{'note_use (last-used bookkeeping)':34} {(time.perf_counter_ns() - t0) / 1000 / args.iterations:8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
