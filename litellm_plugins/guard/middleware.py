"""The request check, run before LiteLLM reads the body (pure ASGI middleware).

Why before LiteLLM: its auth parses the body and calls ``request_data.get("model")`` on it
(``auth_utils.pre_db_read_auth_checks``, and again in its auth error handler), so a JSON body that
is a list, a string, a number or ``null`` answered **500** before any hook of ours could run; and a
text completion without ``prompt`` is a ``KeyError`` (500) in LiteLLM's ``function_setup``, also
before the hooks. So the check runs here, wrapped around the proxy's ASGI app at worker startup,
on ``POST`` LLM routes only:

* a body larger than ``max_body_bytes`` (by ``Content-Length`` or as read): **413** at once, before
  authentication -- reading and parsing it is the cost the limit exists to avoid;
* a body the check refuses (``check.check_request``): LiteLLM is handed a minimal body it can
  parse (``{}``) and the refusal is left in a context variable. LiteLLM then authenticates the
  caller as for any request (no key: 401 first), and the guard's pre-call hook -- the first of our
  hooks -- raises the 400. So the refusal goes through LiteLLM's normal failure path: the caller's
  ``rejected`` usage row, LiteLLM's own failure logging;
* a body that passes: handed on unchanged, and its parsed form is left where LiteLLM's
  ``_read_request_body`` looks first (``scope["parsed_body"]``), so the body is parsed once, as
  before, not twice.

Invalid JSON and form uploads pass through untouched (LiteLLM's own 400 / multipart handling).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

import orjson

from litellm_plugins.core import llm_routes
from litellm_plugins.core.llm_routes import ASGIApp, Message, Receive, Scope, Send
from litellm_plugins.metrics import record as metrics
from litellm_plugins.guard.check import CHAT, EMBEDDINGS, RESPONSES, TEXT, Limits, RequestRejected, check_request

# What LiteLLM is handed instead of a refused body: the least it parses without failing before the
# hooks (a text completion without "prompt" is a KeyError in its function_setup).
STAND_IN = {CHAT: b"{}", EMBEDDINGS: b"{}", RESPONSES: b"{}", TEXT: b'{"prompt": ""}'}
KINDS = {"acompletion": CHAT, "atext_completion": TEXT, "aembedding": EMBEDDINGS, "aresponses": RESPONSES}


class Checked:
    """The middleware's verdict on the current request, for the guard's pre-call hook."""

    __slots__ = ("rejection",)

    def __init__(self, rejection: RequestRejected | None) -> None:
        self.rejection = rejection


PASSED = Checked(None)
_INVALID = object()

# Per request (ASGI apps are awaited in the request's own task, and tasks it creates copy the
# context): None when the middleware did not see this request (the hook then checks ``data``).
verdict: contextvars.ContextVar[Checked | None] = contextvars.ContextVar("litellm_plugins_guard", default=None)


def _path_model(path: str) -> str | None:
    """The model of ``/engines/{model}/...`` and ``/openai/deployments/{model}/...`` routes."""
    for marker in ("/engines/", "/deployments/"):
        at = path.find(marker)
        if at >= 0:
            rest = path[at + len(marker):]
            for suffix, _ in llm_routes.LLM_SUFFIXES:
                if rest.endswith(suffix):
                    return rest[: -len(suffix)] or None
    return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value
    return None


def _is_json(scope: Scope) -> bool:
    content_type = (_header(scope, b"content-type") or b"").lower()
    return not (content_type.startswith(b"multipart/") or content_type.startswith(b"application/x-www-form"))


async def _too_large(send: Send, limit: int) -> None:
    metrics.guard_refused(413)
    body = _too_large_body(limit)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _too_large_body(limit: int) -> bytes:
    return orjson.dumps({"error": {"message": f"request body is larger than {limit} bytes",
                                   "type": "invalid_request_error", "param": None, "code": "413"}})


class GuardMiddleware:
    """Wraps the whole proxy app (outermost), so it runs before LiteLLM's middlewares and auth."""

    def __init__(self, app: ASGIApp, settings: Callable[[], tuple[int, Limits] | None]) -> None:
        self.app = app
        self.settings = settings  # (max body bytes, limits); None: the guard is off in this worker
        self.litellm_plugins_wrapper = True
        self.litellm_plugins_guard = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call_type = llm_routes.call_type_of(scope)
        current = self.settings() if call_type is not None else None
        if current is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        limit, limits = current
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away: let the app see it
                replay = [message]
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                replay = []
                break
        body = b"".join(chunks)
        rejection: RequestRejected | None = None
        try:
            parsed: object = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            # Invalid JSON: LiteLLM's own 400. Or JSON only Python's parser takes (NaN, lone
            # surrogates, which LiteLLM repairs): the pre-call hook checks what LiteLLM parsed.
            parsed = _INVALID
        if parsed is not _INVALID:
            checked = parsed
            if isinstance(parsed, dict) and "model" not in parsed:
                in_path = _path_model(scope.get("path") or "")
                if in_path:  # Azure-style routes name the model in the path: LiteLLM takes it from there
                    checked = {**parsed, "model": in_path}
            try:
                check_request(checked, call_type, limits)
            except RequestRejected as exc:
                rejection = exc
        if rejection is not None:
            token = verdict.set(Checked(rejection))
            body = STAND_IN[KINDS[call_type]]
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope.get("headers") or () if k.lower() != b"content-length"] \
                + [(b"content-length", str(len(body)).encode())]
        elif isinstance(parsed, dict):
            token = verdict.set(PASSED)
            scope["parsed_body"] = (tuple(parsed), parsed)  # LiteLLM's _read_request_body cache
        else:
            token = None
        sent = False

        async def replayed() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            if replay:
                return replay.pop(0)
            return await receive()

        try:
            await self.app(scope, replayed, send)
        finally:
            if token is not None:
                verdict.reset(token)


def install(app: object, settings: Callable[[], tuple[int, Limits] | None]) -> None:
    llm_routes.install(app, lambda inner: GuardMiddleware(inner, settings), "litellm_plugins_guard")
