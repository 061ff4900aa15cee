"""Bounded, paced client load against one or more real proxies, recording every call.

Used by the fault suite (tests/test_faults.py) and its long form (benchmarks/faults.py). Every
request carries its own ``x-litellm-call-id`` so a test can join what the client saw to the usage
rows and ledger entries the proxies wrote. Every loop is bounded three ways: an explicit stop, a
per-thread request cap and a wall-clock deadline; threads are daemons and joined with a timeout.

A request counts as ``200`` only when the client read the whole response (for a stream: the
``[DONE]`` event); a dropped connection (a killed proxy) is recorded as status ``0`` ("conn").
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Spec:
    """One kind of request the load sends (round-robin over the list of specs)."""

    key: str           # the virtual key
    model: str         # eco / balanced / a model group
    stream: bool = False
    max_tokens: int = 6


@dataclass
class Result:
    call_id: str
    proxy: str
    spec: Spec
    body: dict[str, Any]
    status: int                       # 0 = connection error / incomplete stream
    t0: float
    t1: float
    model_id: str | None = None       # x-litellm-model-id: the deployment that answered
    byok: str | None = None           # x-litellm-plugins-byok
    error: str | None = None


@dataclass
class Load:
    """``threads`` clients, each offering at most ``rate_per_thread`` requests/s to ``targets``.

    ``targets`` is a list of ``(name, base_url)``; a client sends to them in turn, like a load
    balancer without health checks (so a killed proxy shows up as connection errors).
    """

    targets: list[tuple[str, str]]
    specs: list[Spec]
    threads: int = 6
    rate_per_thread: float = 4.0
    max_seconds: float = 120.0
    max_requests_per_thread: int = 2000
    timeout: float = 30.0
    tag: str = "fault"
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._spec_cycle = itertools.count()
        self._workers: list[threading.Thread] = []
        self.started_at = 0.0
        self.stopped_at = 0.0

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Load:
        self.started_at = time.time()
        self._stop.clear()
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True, name=f"load-{i}")
                         for i in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)
        self.stopped_at = time.time()

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- one client ----------------------------------------------------------------------------
    def _run(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        period = 1.0 / self.rate_per_thread if self.rate_per_thread > 0 else 0.0
        clients = {name: httpx.Client(base_url=url, timeout=self.timeout) for name, url in self.targets}
        try:
            for n in range(self.max_requests_per_thread):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                began = time.monotonic()
                name = self.targets[(index + n) % len(self.targets)][0]
                spec = self.specs[next(self._spec_cycle) % len(self.specs)]
                result = self.one(clients[name], name, spec)
                with self._lock:
                    self.results.append(result)
                pause = period - (time.monotonic() - began)
                if pause > 0:
                    self._stop.wait(pause)
        finally:
            for client in clients.values():
                client.close()

    def one(self, client: httpx.Client, proxy: str, spec: Spec) -> Result:
        call_id = f"{self.tag}-{uuid.uuid4().hex}"
        # Fixed-length content: the fake's token count (len // 4) is the same for every request.
        body = {"model": spec.model, "max_tokens": spec.max_tokens, "stream": spec.stream,
                "messages": [{"role": "user", "content": f"fault load {call_id}"}]}
        headers = {"Authorization": f"Bearer {spec.key}", "x-litellm-call-id": call_id}
        t0 = time.time()
        status, model_id, byok, error = 0, None, None, None
        try:
            if spec.stream:
                with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                    model_id, byok = r.headers.get("x-litellm-model-id"), r.headers.get("x-litellm-plugins-byok")
                    if r.status_code != 200:
                        r.read()
                        status, error = r.status_code, _error_type(r.text)
                    else:
                        done = any(line.strip() == "data: [DONE]" for line in r.iter_lines())
                        status = 200 if done else 0
                        error = None if done else "incomplete stream"
            else:
                r = client.post("/v1/chat/completions", json=body, headers=headers)
                status = r.status_code
                model_id, byok = r.headers.get("x-litellm-model-id"), r.headers.get("x-litellm-plugins-byok")
                if status != 200:
                    error = _error_type(r.text)
        except httpx.HTTPError as exc:
            status, error = 0, type(exc).__name__
        return Result(call_id, proxy, spec, body, status, t0, time.time(), model_id, byok, error)

    # ---- summaries -----------------------------------------------------------------------------
    def statuses(self) -> Counter[int]:
        with self._lock:
            return Counter(r.status for r in self.results)

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)

    def offered_rate(self) -> float:
        return self.threads * self.rate_per_thread


def _error_type(text: str) -> str:
    try:
        err = json.loads(text).get("error") or {}
        return str(err.get("type") or err.get("code") or "")[:80]
    except (ValueError, AttributeError):
        return text[:80]
