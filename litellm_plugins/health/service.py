"""The per-worker health service: turns outcomes into circuit transitions and keeps routing's view fresh.

``observe`` is called from logging callbacks (after the response was sent) and by the prober; it is
one Redis script call, plus a Postgres insert only when the state actually changed (rare).
``refresh_forever`` runs on every worker: one pipelined Redis read per ``refresh_interval_s`` and
``view.publish`` — so the request path (``async_filter_deployments``, routing) reads memory only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from litellm_plugins.core.runtime import Runtime
from litellm_plugins.health import deployments as catalog
from litellm_plugins.health import store, view
from litellm_plugins.health.circuit import Circuits, Transition, blocked_sets, effective_state, is_up, now_ms
from litellm_plugins.health.settings import HealthSettings
from litellm_plugins.metrics import record as metrics

log = logging.getLogger("litellm_plugins.health")

# Caller errors: the request was bad, not the deployment. 401/403 are NOT here: with the platform's
# key (BYOK failures are skipped before this) they mean the deployment is unusable for everyone.
# 408 (timeout) and 429 (the provider is shedding our traffic) count as well.
CALLER_ERROR_STATUSES = frozenset({400, 404, 405, 409, 413, 415, 422})


def failure_status(kwargs: dict[str, Any]) -> int | None:
    exc = kwargs.get("exception")
    for attr in ("status_code", "code"):
        value = getattr(exc, attr, None)
        try:
            if value is not None:
                return int(value)
        except (TypeError, ValueError):
            continue
    return None


def is_proxy_rejection(kwargs: dict[str, Any]) -> bool:
    """The failure is a refusal raised by a proxy hook (ours: 402 insufficient credits, 403 tier; or
    LiteLLM's), not an answer of the provider: it says nothing about the deployment. LiteLLM logs
    such a refusal as a failure of the routed group's deployment (seen on chat, /v1/responses and
    /v1/messages, 1.108.7): counted, five 402s in a row opened the circuit of a healthy deployment."""
    from fastapi import HTTPException
    from litellm.proxy._types import ProxyException

    return isinstance(kwargs.get("exception"), ProxyException | HTTPException)


def model_id_of(kwargs: dict[str, Any]) -> str | None:
    slo = kwargs.get("standard_logging_object") or {}
    model_id = slo.get("model_id") if isinstance(slo, dict) else None
    if not model_id:
        info = (kwargs.get("litellm_params") or {}).get("model_info") or {}
        model_id = info.get("id") if isinstance(info, dict) else None
    return str(model_id) if model_id else None


def failure_reason(kwargs: dict[str, Any], status: int | None) -> str:
    """Status + exception class only: provider messages can echo keys, so they are never stored."""
    exc = kwargs.get("exception")
    name = type(exc).__name__ if exc is not None else "error"
    return f"traffic: HTTP {status} ({name})" if status is not None else f"traffic: {name}"


# How often each worker checks Redis's operator overrides against Postgres (one indexed query).
OVERRIDE_CHECK_INTERVAL_S = 2.0

class HealthService:
    def __init__(self, rt: Runtime,
                 source: Callable[[], list[catalog.Deployment]] = catalog.current) -> None:
        self.rt = rt
        self.source = source
        self.settings: HealthSettings = rt.settings.health
        self.circuits = Circuits(rt.redis, rt.settings.redis_key_prefix)
        self.deployments: dict[str, catalog.Deployment] = {}
        self.last_refresh_ok = 0.0
        # Ids seen in outcomes but not (yet) in the router's list, e.g. deployments added at runtime
        # through LiteLLM's /model/new: their circuits must reach the view too. Bounded.
        self.observed: set[str] = set()
        self._pending: dict[str, list[Any]] = {}  # model_id -> [successes, latency sum, latency samples]
        self._overrides_checked = 0.0

    # ---- outcomes --------------------------------------------------------------------------------
    def note_success(self, model_id: str, latency_ms: float | None) -> None:
        """A traffic success, batched in memory: flushed to Redis by the refresher (every
        ``refresh_interval_s``) or just before this deployment's next failure, so order within a
        worker is kept and Redis sees one call per deployment per tick instead of one per request."""
        pending = self._pending.get(model_id)
        if pending is None:
            pending = self._pending[model_id] = [0, 0.0, 0]
        pending[0] += 1
        if latency_ms is not None:
            pending[1] += latency_ms
            pending[2] += 1

    async def flush(self, model_id: str | None = None) -> None:
        ids = [model_id] if model_id is not None else list(self._pending)
        for mid in ids:
            pending = self._pending.pop(mid, None)
            if pending is None:
                continue
            count, latency_sum, latency_n = pending
            await self.observe(mid, True, source="traffic", count=count,
                               latency_ms=latency_sum / latency_n if latency_n else None)

    async def observe(self, model_id: str, ok: bool, *, source: str, latency_ms: float | None = None,
                      reason: str = "", count: int = 1) -> Transition:
        if not ok and source == "traffic" and model_id in self._pending:
            await self.flush(model_id)
        s = self.settings
        threshold = s.failure_threshold if source == "traffic" else s.probe_failure_threshold
        if model_id not in self.deployments and len(self.observed) < 10_000:
            self.observed.add(model_id)
        transition = await self.circuits.record(model_id, ok, source=source, threshold=threshold,
                                                cooldown_s=s.cooldown_s, alpha=s.ewma_alpha,
                                                latency_ms=latency_ms, reason=reason, count=count)
        if transition.changed:
            await self.record_change(model_id, effective_state(transition.old, transition.forced),
                                     effective_state(transition.new, transition.forced),
                                     reason or ("recovered" if ok else ""))
        return transition

    async def record_change(self, model_id: str, old: str, state: str, reason: str) -> None:
        """Log + keep in history a change of *effective* state (circuit, or the operator's override);
        a circuit moving underneath an override changes nothing routing does, so it is not a change."""
        if old == state:
            await self.refresh_once()
            return
        deployment = self.deployments.get(model_id)
        log.warning("health: deployment %s (%s) %s -> %s%s", model_id,
                    deployment.model_group if deployment else "?", old, state, f": {reason}" if reason else "")
        try:
            await store.record_event(self.rt.pool, model_id,
                                     deployment.model_group if deployment else "",
                                     deployment.provider if deployment else "",
                                     state, is_up(state), reason or None)
        except Exception:  # noqa: BLE001 - history is best effort; Redis already has the state
            log.exception("health: could not record status change of %s", model_id)
        await self.refresh_once()  # this worker routes on the change now, not after the next tick

    # ---- view refresh ----------------------------------------------------------------------------
    def reload_catalog(self) -> list[catalog.Deployment]:
        current = self.source()
        if current:
            self.deployments = {d.model_id: d for d in current}
        return current

    async def refresh_once(self) -> None:
        ids = list(self.deployments.keys() | self.observed)
        if not ids:
            return
        rows = await self.circuits.read_routing(ids)
        open_ids, forced_down = blocked_sets(ids, rows, int(self.settings.cooldown_s * 1000), now_ms())
        view.publish(open_ids, forced_down)
        self.last_refresh_ok = time.monotonic()
        if metrics.active() is not None:
            for model_id, (state, _, forced) in zip(ids, rows):
                d = self.deployments.get(model_id)
                metrics.circuit(model_id, d.model_group if d else None, d.provider if d else None,
                                effective_state((state or b"closed").decode(), (forced or b"").decode()))

    async def restore_overrides(self) -> int:
        """Operator overrides live in Redis for routing but are decided in Postgres (``health_audit``):
        make Redis agree with the latest decision, so a Redis flush or restart cannot silently return a
        forced-down deployment to traffic. Returns how many overrides were re-applied."""
        overrides = await store.current_overrides(self.rt.pool)
        if not overrides:
            return 0
        ids = list(overrides)
        live = await self.circuits.read(ids)
        restored = 0
        for model_id in ids:
            forced, reason, actor = overrides[model_id]
            if (live.get(model_id) or {}).get("forced", "") != forced:
                await self.circuits.force(model_id, forced, reason, actor)
                restored += 1
        if restored:
            log.warning("health: restored %d operator override(s) from Postgres into Redis", restored)
        return restored

    async def refresh_forever(self) -> None:
        while True:
            try:
                self.reload_catalog()
                await self.flush()
                if time.monotonic() - self._overrides_checked >= OVERRIDE_CHECK_INTERVAL_S:
                    self._overrides_checked = time.monotonic()
                    await self.restore_overrides()
                await self.refresh_once()
            except Exception as exc:  # noqa: BLE001 - keep routing on the last known state...
                if time.monotonic() - self.last_refresh_ok > self.settings.stale_after_s and \
                        view.unhealthy_model_ids():
                    # ...but not forever: stale "unhealthy" flags must not starve a model group.
                    log.error("health: cannot read circuit states (%s); excluding nothing until Redis is back",
                              type(exc).__name__)
                    view.publish(frozenset(), frozenset())
            await asyncio.sleep(self.settings.refresh_interval_s)


_service: HealthService | None = None


def get(rt: Runtime) -> HealthService:
    """The worker's service (created lazily so hooks work even before ``start`` ran its jobs)."""
    global _service
    if _service is None or _service.rt is not rt:
        _service = HealthService(rt)
    return _service
