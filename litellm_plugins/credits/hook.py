"""LiteLLM hooks of the credits capability: hold before the call, settle / void after, usage rows.

Every method is defined on ``CreditsHook`` itself (LiteLLM skips inherited overrides) and is a
no-op unless the runtime is started and ``litellm_plugins.credits.enabled`` is true. The logic
lives in :mod:`litellm_plugins.credits.engine`; the logging callbacks only queue records for the
writer, so nothing here runs Postgres on the request path.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from litellm_plugins.core import runtime
from litellm_plugins.core.runtime import Runtime
from litellm_plugins.credits import scope
from litellm_plugins.credits.engine import Engine

log = logging.getLogger("litellm_plugins.credits")

_engine: Engine | None = None


def engine() -> Engine | None:
    """The worker's engine when credits are on; None otherwise (cheap: two attribute reads)."""
    rt = runtime.current()
    if rt is None or not rt.settings.credits.enabled:
        return None
    return _engine


async def start(rt: Runtime) -> None:
    """Called once per worker by core.startup: build the engine, start writer + reconciler."""
    global _engine
    _engine = Engine(rt)
    if _engine.cache.sender is not None:
        await _engine.cache.sender.connect()  # failing is not fatal: the journal is awaited meanwhile
        rt.tasks.on_stop(_engine.cache.sender.close)
    rt.tasks.start("credits-writer", _engine.writer.run)
    rt.tasks.start("credits-reconciler", _engine.reconcile_forever)
    if _engine.leases.enabled:
        rt.tasks.start("credits-leases", _engine.leases.run)
        rt.tasks.on_stop(_engine.leases.close)
    rt.tasks.on_stop(_engine.writer.stop)
    from litellm.proxy.proxy_server import app

    scope.install(app, _engine.close_abandoned)


class CreditsHook(CustomLogger):
    """Hook methods must be defined on this class itself: LiteLLM skips inherited overrides."""

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> None:
        eng = engine()
        if eng is not None:
            await eng.pre_call(user_api_key_dict, data, call_type)
        return None

    async def async_post_call_response_headers_hook(
        self, data: dict, user_api_key_dict: Any, response: object,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        eng = engine()
        if eng is None:
            return None
        return await eng.response_headers(data, response)

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict: Any, response: Any,
                                                      request_data: dict) -> AsyncIterator[Any]:
        """A stream's settle + usage row are journalled when its provider stream ends, before LiteLLM
        sends ``data: [DONE]`` (``Engine.stream_chunks``): a kill -9 after the client's last byte loses
        nothing."""
        eng = engine()
        chunks = response if eng is None else eng.stream_chunks(response, request_data)
        async for chunk in chunks:
            yield chunk

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        eng = engine()
        if eng is None:
            return
        try:
            await eng.record_success(kwargs)
        except Exception:  # noqa: BLE001 - a logging callback must never break the proxy
            log.exception("credits: settle failed to queue")

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        eng = engine()
        if eng is None:
            return
        try:
            await eng.writer.submit(eng.attempt_failure_records(kwargs))
        except Exception:  # noqa: BLE001
            log.exception("credits: failure record failed to queue")

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        eng = engine()
        if eng is None:
            return None
        try:
            # This hook runs before the error response is sent: the void + usage row are journalled
            # now (handed to the kernel without yielding while the send-only connection is up), so a
            # kill -9 right after the client got its error loses neither.
            await eng.writer.submit(eng.request_failure_records(request_data, original_exception, user_api_key_dict))
        except Exception:  # noqa: BLE001
            log.exception("credits: void failed to queue")
        return None


credits_hook = CreditsHook()
