"""Microbenchmark of the request check and the two ASGI wrappers (guard, credits' hold scope).

Microseconds per LLM request added on the request path, measured in process against a bare ASGI app
that reads the body the way LiteLLM does (``request.body()`` then ``orjson.loads``, skipped when the
guard left the parsed body in ``scope["parsed_body"]``). No network, no proxy.

    python benchmarks/micro_guard.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from litellm_plugins.credits.scope import HoldScope  # noqa: E402
from litellm_plugins.guard.check import Limits, check_request  # noqa: E402
from litellm_plugins.guard.middleware import GuardMiddleware  # noqa: E402

BODY = json.dumps({"model": "eco", "messages": [{"role": "system", "content": "be brief"},
                                                {"role": "user", "content": "hello " * 40}],
                   "max_tokens": 64, "temperature": 0.7, "stream": False}).encode()
SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
         "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]}


async def litellm_like(scope, receive, send) -> None:
    cached = scope.get("parsed_body")
    if cached is None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        orjson.loads(b"".join(chunks))
    await send({"type": "http.response.start", "status": 200, "headers": []})


async def run(app, n: int) -> list[float]:
    async def send(message) -> None:
        return None

    out = []
    for _ in range(n):
        sent = False

        async def receive():
            nonlocal sent
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}

        t0 = time.perf_counter_ns()
        await app(dict(SCOPE), receive, send)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    limits = Limits()
    data = orjson.loads(BODY)
    t0 = time.perf_counter_ns()
    for _ in range(args.n):
        check_request(data, "acompletion", limits)
    print(f"check_request alone: {(time.perf_counter_ns() - t0) / 1000 / args.n:.2f} us")
    apps = {"bare (LiteLLM-like body read)": litellm_like,
            "+ guard middleware": GuardMiddleware(litellm_like, lambda: (16 * 1024 * 1024, limits)),
            "+ guard + hold scope": HoldScope(GuardMiddleware(litellm_like, lambda: (16 * 1024 * 1024, limits)),
                                              lambda holds: None)}
    for name, app in apps.items():
        asyncio.run(run(app, 2000))  # warm up
        times = asyncio.run(run(app, args.n))
        print(f"{name}: median {statistics.median(times):.2f} us, p90 {sorted(times)[int(0.9 * len(times))]:.2f} us")


if __name__ == "__main__":
    main()
