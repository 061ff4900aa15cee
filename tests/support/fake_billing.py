"""A fake billing receiver on loopback (Lago, OpenMeter and Stripe meter-event endpoints, and
operators' webhook endpoints under ``/hooks/``) for the billing export tests — the billing
counterpart of the fake provider.

Records every event it accepts (with the Authorization header it came with, so several exporters of
the same type are told apart by their keys); answers 5xx, late (after recording), or not at all on demand; and can
accept a request and then drop the connection before its answer is complete, so the exporter sees a
failure and re-sends what was already recorded (what receivers dedupe on their ids).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from tests.support.fake_provider import FakeProviderServer

LAGO, OPENMETER, STRIPE = "/api/v1/events/batch", "/api/v1/events", "/v1/billing/meter_events"
WEBHOOKS = "/hooks/"  # operators' webhook endpoints: /hooks/<name>, recorded with the path as "authorization"


@dataclass
class Received:
    receiver: str  # "lago" | "openmeter" | "stripe"
    authorization: str | None
    event_id: str
    body: dict[str, Any]
    at: float = field(default_factory=time.time)


class FakeBilling:
    def __init__(self, keep: bool = True) -> None:
        self.keep = keep  # False: count accepted events only (benchmarks drain millions)
        self.accepted = 0
        self.received: list[Received] = []
        self.requests = 0
        self._fail: list[int] = []  # statuses to answer next, one per request
        self._drops = 0  # requests to accept, record, then drop the connection of
        self._drop_for: str | None = None  # ... only those with this Authorization header
        self.delay = 0.0
        # Refuse a known id instead of accepting it again, as older Lago (422 value_already_exist for
        # those indexes, nothing of the batch stored) and Stripe (400 resource_already_exists) do.
        self.strict = False
        self._lock = threading.Lock()

    # ---- control -----------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.requests, self._fail, self._drops, self.delay, self.strict = 0, [], 0, 0.0, False
            self.accepted, self._drop_for = 0, None

    def fail(self, status: int, times: int) -> None:
        with self._lock:
            self._fail.extend([status] * times)

    def drop_after_accept(self, times: int, authorization: str | None = None) -> None:
        """The next ``times`` requests (with this Authorization header, if given) are recorded, then
        their connection is dropped before the answer completes."""
        with self._lock:
            self._drops += times
            self._drop_for = authorization

    # ---- views -------------------------------------------------------------------------------
    def events(self, receiver: str, authorization: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.receiver == receiver and r.authorization == authorization]

    def unique(self, receiver: str, authorization: str) -> dict[str, Received]:
        """After dedupe by id, as the receiver would: the first copy of each id."""
        out: dict[str, Received] = {}
        for r in self.events(receiver, authorization):
            out.setdefault(r.event_id, r)
        return out

    # ---- ASGI --------------------------------------------------------------------------------
    @property
    def app(self) -> FakeBilling:
        """The ASGI app is the instance (uvicorn takes a bound method for an ASGI2 app)."""
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.requests += 1
        with self._lock:
            status = self._fail.pop(0) if self._fail else None
        if status is not None:
            return await _answer(send, status, b'{"error": "fake billing failure"}')
        path, auth = scope["path"], request.headers.get("authorization")
        if path == LAGO:
            events = [("lago", e["transaction_id"], e) for e in (await request.json())["events"]]
        elif path == OPENMETER:
            if request.headers.get("content-type") != "application/cloudevents-batch+json":
                return await _answer(send, 415, b'{"error": "content type"}')
            events = [("openmeter", e["id"], e) for e in await request.json()]
        elif path == STRIPE:
            form = dict(parse_qsl((await request.body()).decode()))
            events = [("stripe", form["identifier"], form)]
        elif path.startswith(WEBHOOKS):  # an operator's endpoint: the raw body and signature headers
            raw = (await request.body()).decode()
            auth = path  # several webhook exporters are told apart by their URL
            events = [("webhook", request.headers.get("webhook-id", ""), {
                "raw": raw, "json": json.loads(raw), "timestamp": request.headers.get("webhook-timestamp"),
                "signature": request.headers.get("webhook-signature")})]
        elif path == "/_fake/accepted":
            return await _answer(send, 200, json.dumps({"accepted": self.accepted}).encode())
        else:
            return await _answer(send, 404, b'{"error": "not found"}')
        with self._lock:
            known = {(r.receiver, r.authorization, r.event_id) for r in self.received} if self.strict else set()
            refused = [i for i, (name, event_id, _) in enumerate(events) if (name, auth, event_id) in known]
        if refused and path == LAGO:
            details = json.dumps({"error_details": {str(i): {"transaction_id": ["value_already_exist"]}
                                                    for i in refused}}).encode()
            return await _answer(send, 422, details)
        if refused and path == STRIPE:
            return await _answer(send, 400, b'{"error": {"code": "resource_already_exists"}}')
        with self._lock:
            self.accepted += len(events)
            if self.keep:
                self.received.extend(Received(name, auth, event_id, body) for name, event_id, body in events)
            drop = self._drops > 0 and self._drop_for in (None, auth)
            self._drops -= drop
        if self.delay:  # slow: recorded at once, answered late (a proxy killed meanwhile never hears it)
            await asyncio.sleep(self.delay)
        if drop:  # accepted and recorded; the answer starts and is never finished
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")]})
            raise ConnectionAbortedError("fake billing: connection dropped after accepting the batch")
        await _answer(send, 200, b"{}")


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class FakeBillingServer(FakeProviderServer):
    """The fake provider's loopback runner (``up()`` / ``down()``) around a :class:`FakeBilling`."""

    def __init__(self, keep: bool = True, port: int | None = None) -> None:
        super().__init__(FakeBilling(keep), port)  # type: ignore[arg-type] - any object with an ASGI ``app``
        self.billing: FakeBilling = self.provider  # type: ignore[assignment]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def main() -> None:
    """Standalone (benchmarks): ``python -m tests.support.fake_billing --port 9100``; counts only."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    uvicorn.run(FakeBilling(keep=False).app, host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
