"""LiteLLM hook of the guard capability: refuse a malformed LLM request before any other hook of ours.

``guard_hook`` must be the first of our entries in ``litellm_settings.callbacks`` (startup refuses
otherwise): LiteLLM runs pre-call hooks in list order, so a refused request is never routed, never
held against the caller's credits and never reaches a provider. The refusal is a ``ProxyException``
(OpenAI's error shape, status 400 with ``param`` naming the field); LiteLLM then runs its failure
path, where the credits capability writes the caller's ``rejected`` usage row.

The check itself runs in ``middleware.GuardMiddleware``, before LiteLLM reads the body (some bodies
crash LiteLLM before any hook); a refused body is replaced by a minimal one and the refusal left in a
context variable, which this hook raises. A request the middleware did not see (a body only Python's
JSON parser accepts, such as ``NaN``) is checked here, on what LiteLLM parsed.
"""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from litellm_plugins.core import runtime
from litellm_plugins.core.errors import plugin_error
from litellm_plugins.core.runtime import Runtime
from litellm_plugins.guard import middleware
from litellm_plugins.metrics import record as metrics
from litellm_plugins.guard.check import CALL_KINDS, Limits, RequestRejected, check_request

_limits: Limits | None = None


def _current_limits() -> Limits | None:
    rt = runtime.current()
    if rt is None or not rt.settings.guard.enabled:
        return None
    return _limits


def _middleware_settings() -> tuple[int, Limits] | None:
    rt = runtime.current()
    if rt is None or not rt.settings.guard.enabled or _limits is None:
        return None
    return rt.settings.guard.max_body_bytes, _limits


async def start(rt: Runtime) -> None:
    """Called once per worker by core.startup: fix the limits, wrap the proxy app."""
    global _limits
    settings = rt.settings.guard
    _limits = Limits(max_n=settings.max_n, max_best_of=settings.max_best_of)
    from litellm.proxy.proxy_server import app

    middleware.install(app, _middleware_settings)


def _rejection(exc: RequestRejected) -> Exception:
    metrics.guard_refused(exc.status)
    return plugin_error(exc.status, exc.message, "invalid_request_error", exc.param)


class GuardHook(CustomLogger):
    """Hook methods must be defined on this class itself: LiteLLM skips inherited overrides."""

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> None:
        limits = _current_limits()
        if limits is None or call_type not in CALL_KINDS:
            return None
        seen = middleware.verdict.get()
        if seen is not None:
            if seen.rejection is not None:
                raise _rejection(seen.rejection)
            return None
        try:
            check_request(data, call_type, limits)
        except RequestRejected as exc:
            raise _rejection(exc) from None
        return None


guard_hook = GuardHook()
