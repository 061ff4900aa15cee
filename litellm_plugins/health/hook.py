"""LiteLLM hooks of the health capability.

* ``async_filter_deployments`` (request path, memory only): drops deployments whose circuit is open
  or that an operator forced down. If dropping open circuits would leave the model group empty they
  are all kept — a guess must never black-hole a request; a forced-down deployment stays out.
* ``async_log_success_event`` / ``async_log_failure_event`` (after the response): feed the circuit.
  Not counted: attempts made with the caller's own BYOK key (``context.byok_used``), caller errors
  (400/404/405/409/413/415/422), and anything without a deployment id (rejected before routing).
* ``start(rt)``: the supervised jobs — the refresher (every worker) and the prober (lease holder).

LiteLLM runs a hook method only if it is defined on this class itself, not inherited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from litellm_plugins.core import context, runtime
from litellm_plugins.core.runtime import Runtime
from litellm_plugins.health import service as health_service
from litellm_plugins.health import view
from litellm_plugins.health.prober import Prober


def _latency_ms(start: Any, end: Any) -> float | None:
    if isinstance(start, datetime) and isinstance(end, datetime):
        return max((end - start).total_seconds() * 1000.0, 0.0)
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return max((end - start) * 1000.0, 0.0)
    return None


class HealthHook(CustomLogger):
    """Hook methods must be defined on this class itself: LiteLLM skips inherited overrides."""

    async def async_filter_deployments(self, model: str, healthy_deployments: list,
                                       messages: Any, request_kwargs: dict | None = None,
                                       parent_otel_span: Any = None) -> list[dict]:
        unhealthy = view.unhealthy_model_ids()
        if not unhealthy:  # the common case: one attribute read and a truth test
            return healthy_deployments
        kept = [d for d in healthy_deployments
                if (d.get("model_info") or {}).get("id") not in unhealthy]
        if kept:
            return kept
        forced = view.forced_down_model_ids()
        kept = [d for d in healthy_deployments if (d.get("model_info") or {}).get("id") not in forced]
        if not kept and healthy_deployments:
            # Every deployment left was taken out by an operator: a clean 503 (and LiteLLM's
            # fallbacks, which it tries on this error) rather than "no deployments, rate limited".
            raise litellm.ServiceUnavailableError(
                message=f"every deployment of model group {model!r} is forced down by an operator "
                        "(see GET /plugins/health)", model=model, llm_provider="")
        return kept

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        rt = runtime.current()
        if rt is None or not rt.settings.health.enabled:
            return
        await _observe(rt, kwargs, True, _latency_ms(start_time, end_time))

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        rt = runtime.current()
        if rt is None or not rt.settings.health.enabled:
            return
        await _observe(rt, kwargs, False, None)


async def _observe(rt: Runtime, kwargs: dict, ok: bool, latency_ms: float | None) -> None:
    if context.from_logging(kwargs).get("byok_used"):
        return  # the caller's own key: says nothing about the platform's deployment
    model_id = health_service.model_id_of(kwargs)
    if model_id is None:
        return
    svc = health_service.get(rt)
    if ok:
        svc.note_success(model_id, latency_ms)
        return
    status = health_service.failure_status(kwargs)
    if status in health_service.CALLER_ERROR_STATUSES or health_service.is_proxy_rejection(kwargs):
        return
    await svc.observe(model_id, False, source="traffic", reason=health_service.failure_reason(kwargs, status))


async def start(rt: Runtime) -> None:
    """Called once per worker by core.startup when health is enabled."""
    svc = health_service.get(rt)
    prober = Prober(svc)
    rt.tasks.start("health.refresher", svc.refresh_forever)
    rt.tasks.start("health.prober", prober.run_forever)
    rt.tasks.on_stop(prober.release)
    rt.tasks.on_stop(svc.flush)
    _probers[id(rt)] = prober


_probers: dict[int, Prober] = {}


def prober_for(rt: Runtime) -> Prober | None:
    return _probers.get(id(rt))


health_hook = HealthHook()
