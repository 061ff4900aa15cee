"""LiteLLM hooks of the metrics capability: count every request's outcome; sample the gauges.

``async_log_success_event`` (a background logging callback, once per successful request, streamed
ones after the stream) and ``async_post_call_failure_hook`` (once per failed or refused request,
before its error response: a few counter increments, nothing else) count requests; the other
capabilities count their own events through ``litellm_plugins.metrics.record``. A supervised job
samples what is cheaper to read every few seconds than to track per request (writer queue, spool,
journal, oldest unflushed record). Hook methods are defined on the class itself (LiteLLM skips
inherited overrides).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from litellm_plugins.core import catalog, context, runtime
from litellm_plugins.core.identity import account_id
from litellm_plugins.core.runtime import Runtime
from litellm_plugins.metrics import multiproc, record

log = logging.getLogger("litellm_plugins.metrics")

_groups: tuple[Any, frozenset[str]] = (None, frozenset())


def _known_group(name: Any) -> str:
    """A model group label: only names the router knows (a refused request may name anything)."""
    global _groups
    if not isinstance(name, str) or not name:
        return "none"
    cat = catalog.snapshot()
    if cat is None:
        return "_other"
    if _groups[0] is not cat:
        _groups = (cat, frozenset(cat.group_of.values()))
    return name if name in _groups[1] else "_other"


def _status_of(exc: BaseException) -> str:
    for attr in ("status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return str(value)
    return "500"


def _is_refusal(exc: BaseException) -> bool:
    from fastapi import HTTPException
    from litellm.proxy._types import ProxyException

    return isinstance(exc, ProxyException | HTTPException)


def _account(ctx: dict[str, Any], meta: dict[str, Any]) -> str | None:
    account = ctx.get("account")
    if account:
        return str(account)
    rt = runtime.current()
    order = rt.settings.account_order if rt is not None else ("user", "team", "key")
    return account_id(meta.get("user_api_key_user_id"), meta.get("user_api_key_team_id"),
                      meta.get("user_api_key_hash"), order)


class MetricsHook(CustomLogger):
    """Hook methods must be defined on this class itself: LiteLLM skips inherited overrides."""

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        i = record.active()
        if i is None or not isinstance(kwargs, dict):
            return
        try:
            ctx = context.from_logging(kwargs)
            slo = kwargs.get("standard_logging_object") or {}
            cat = catalog.snapshot()
            model_id = slo.get("model_id")
            served = cat.group_of.get(str(model_id)) if cat is not None and model_id is not None else None
            served = served or slo.get("model_group") or ctx.get("model_group")
            level = ctx.get("power_level")
            account = _account(ctx, slo.get("metadata") or {}) if i.per_account else None
            record.request(level, ctx.get("tier"), _known_group(served), "success", account)
            first = ctx.get("model_group")
            if first and served and served != first:
                record.fallback(level, _known_group(served))
        except Exception:  # noqa: BLE001 - counting must never break a logging callback
            log.exception("metrics: could not count a success")

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        i = record.active()
        if i is None:
            return None
        try:
            meta = request_data.get("metadata") if isinstance(request_data, dict) else None
            found = meta.get(context.CONTEXT_KEY) if isinstance(meta, dict) else None
            ctx = found if isinstance(found, context.RequestContext) else {}
            status = _status_of(original_exception)
            outcome = "refused" if _is_refusal(original_exception) else "error"
            error_type = getattr(original_exception, "type", None) or type(original_exception).__name__
            group = ctx.get("model_group") or (request_data or {}).get("model")
            account = None
            if i.per_account:
                account = ctx.get("account") or account_id(
                    getattr(user_api_key_dict, "user_id", None), getattr(user_api_key_dict, "team_id", None),
                    getattr(user_api_key_dict, "token", None), runtime.get().settings.account_order)
            record.request(ctx.get("power_level"), ctx.get("tier"), _known_group(group), outcome, account)
            record.refusal(status, error_type)
        except Exception:  # noqa: BLE001
            log.exception("metrics: could not count a failure")
        return None


metrics_hook = MetricsHook()


# ---- start + sampler ---------------------------------------------------------------------------------
async def start(rt: Runtime) -> None:
    """Called once per worker by core.startup (before the capabilities it instruments start)."""
    settings = rt.settings.metrics
    directory = multiproc.setup()  # before the first import of prometheus_client
    from litellm_plugins.metrics.instruments import Instruments

    if directory:
        multiproc.forget_dead_workers(directory)
    if record.active() is None:
        record.install(Instruments(settings.max_label_values, per_account=settings.per_account_labels,
                                   max_accounts=settings.max_accounts))
    from litellm_plugins.metrics import api

    if not multiproc.prometheus_callback_listed(rt.config):
        api.install_route()
    log.info("metrics: %s, served on %s", f"multiprocess ({directory})" if directory else "single process",
             "/plugins/metrics" if api.route_installed() else "LiteLLM's /metrics (prometheus callback)")
    rt.tasks.start("metrics-sampler", lambda: sample_forever(rt))


async def sample_forever(rt: Runtime) -> None:
    while True:
        try:
            await sample_once(rt)
        except Exception as exc:  # noqa: BLE001 - Redis down: the other gauges still move next time
            log.warning("metrics: sampling failed (%s)", type(exc).__name__)
        await asyncio.sleep(rt.settings.metrics.sample_interval_seconds)


async def sample_once(rt: Runtime) -> None:
    i = record.active()
    if i is None:
        return
    record.publish()
    if not rt.settings.credits.enabled:
        return
    from litellm_plugins.credits.hook import engine

    eng = engine()
    if eng is None:
        return
    writer = eng.writer
    now = time.time()
    i.queue.set(len(writer.queue))
    i.pg_down.set(1 if writer.pg_down else 0)
    spool_bytes = await asyncio.to_thread(_spool_bytes, eng.spool)
    i.spool_bytes.set(spool_bytes)
    if spool_bytes == 0:
        writer.spooled_since = None
    oldest = 0.0
    if writer.queue and writer.queued_since is not None:
        oldest = now - writer.queued_since
    if spool_bytes and writer.spooled_since is not None:
        oldest = max(oldest, now - writer.spooled_since)
    i.oldest.set(round(oldest, 3))
    i.journal.set(await rt.redis.hlen(eng.cache.journal_key()))


def _spool_bytes(spool: Any) -> int:
    total = 0
    for path in spool.files():
        try:
            total += os.stat(path).st_size
        except OSError:
            pass
    return total
