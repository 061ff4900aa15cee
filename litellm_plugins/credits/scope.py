"""No hold outlives its request: the holds a request placed are closed when its HTTP exchange ends.

Why: a hold is closed by LiteLLM's callbacks -- settle on success, void on failure -- and some ways a
request ends run neither, so the hold stayed in ``held`` until the reconciler expired it after
``hold_ttl_seconds`` (900 s):

* the client disconnects in the middle of a stream: LiteLLM's stream wrapper is abandoned, no
  success callback and no failure hook;
* a later pre-call hook raises LiteLLM's ``ProxyRateLimitError`` and a configured fallback exists:
  LiteLLM re-runs every pre-call hook on a fresh copy of the request
  (``_pre_call_with_fallbacks``), so the first hold is in a request dict nobody reports on again;
* anything else that ends the HTTP exchange between our pre-call hook and the callbacks.

The mechanism: a pure ASGI wrapper around the proxy sets a per-request list (a context variable;
LiteLLM awaits hooks in the request's own task, and tasks it creates copy the context, sharing the
list); the pre-call hook adds each hold it places. When the app returns, every hold not yet closed
by a callback is voided ``CLOSE_GRACE_SECONDS`` later -- the grace lets a streamed success callback,
which LiteLLM schedules as the stream ends, settle first. A settle that still arrives after the void
charges as before (a voided hold can still settle; the call happened), so the grace only avoids
churn, it is not needed for correctness.

Cost on the request path: one context-variable set per LLM request and one list append per hold; a
timer only for a request whose hold is still open when the response has been sent (streams).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Any

from litellm_plugins.core import llm_routes
from litellm_plugins.core.llm_routes import ASGIApp, Receive, Scope, Send

log = logging.getLogger("litellm_plugins.credits")

CLOSE_GRACE_SECONDS = 0.5

# One entry per hold: (hold, request context, caller, streamed?) -- what its usage row needs.
Placed = tuple[dict[str, Any], dict[str, Any], Any, bool]

# The holds placed by the current request (None outside an LLM request seen by the wrapper).
request_holds: contextvars.ContextVar[list[Placed] | None] = contextvars.ContextVar(
    "litellm_plugins_request_holds", default=None)


def track(hold: dict[str, Any], ctx: dict[str, Any], caller: Any, stream: bool) -> None:
    """Called by the pre-call hook for every hold it places (no await, no I/O)."""
    holds = request_holds.get()
    if holds is not None:
        holds.append((hold, ctx, caller, stream))


def unfinished(holds: list[Placed]) -> list[Placed]:
    return [p for p in holds if not p[0].get("closed") and p[0].get("amount")]


class HoldScope:
    """Outermost ASGI wrapper of the proxy (installed by ``credits.hook.start``)."""

    def __init__(self, app: ASGIApp, close: Callable[[list[Placed]], None]) -> None:
        self.app = app
        self.close = close  # voids the request's unfinished holds (Engine.close_abandoned)
        self.litellm_plugins_wrapper = True
        self.litellm_plugins_holds = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if llm_routes.call_type_of(scope) is None:
            await self.app(scope, receive, send)
            return
        holds: list[Placed] = []
        token = request_holds.set(holds)
        try:
            await self.app(scope, receive, send)
        finally:
            request_holds.reset(token)
            if holds and unfinished(holds):
                asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, self._close_later, holds)

    def _close_later(self, holds: list[Placed]) -> None:
        if unfinished(holds):
            try:
                self.close(holds)
            except Exception:  # noqa: BLE001 - the reconciler still expires them after the TTL
                log.exception("credits: could not void the holds of an ended request")


def install(app: object, close: Callable[[list[Placed]], None]) -> None:
    llm_routes.install(app, lambda inner: HoldScope(inner, close), "litellm_plugins_holds")
