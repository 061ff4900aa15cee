"""``/plugins/health``: provider and deployment health for anyone with a key; overrides for admins.

Reading is open to every authenticated key: it is the status page users need when a model is slow,
and it carries no per-user data. It never carries secrets either: no api keys, no provider error
bodies (which can echo keys), and the endpoint (scheme://host only) is shown to admins only.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request

from litellm_plugins.core import runtime
from litellm_plugins.core.errors import bad_request, not_found
from litellm_plugins.core.identity import Caller
from litellm_plugins.core.routes import admin_caller, current_caller
from litellm_plugins.health import store, view
from litellm_plugins.health import service as health_service
from litellm_plugins.health.circuit import effective_state, is_up, now_ms

router = APIRouter(prefix="/plugins/health", tags=["litellm-plugins: health"])

STATUS_WORDS = {"closed": "healthy", "half_open": "recovering", "open": "down",
                "forced_down": "forced_down", "forced_up": "forced_up"}
MAX_REASON = 500


def _ms_iso(value: str | None) -> str | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(float(value)) / 1000, timezone.utc).isoformat()


def _float(value: str | None, digits: int) -> float | None:
    try:
        return round(float(value), digits) if value not in (None, "") else None
    except ValueError:
        return None


def describe(fields: dict[str, str], cooldown_ms: int, now: int) -> dict[str, Any]:
    """One deployment's live state from its Redis hash (pure: tested without a proxy)."""
    circuit = fields.get("state") or "closed"
    opened_at = int(float(fields.get("opened_at") or 0))
    if circuit == "open" and now >= opened_at + cooldown_ms:
        circuit = "half_open"  # the transition is recorded lazily; show what routing does now
    forced = fields.get("forced") or ""
    state = effective_state(circuit, forced)
    out: dict[str, Any] = {
        "status": STATUS_WORDS[state],
        "circuit": circuit,
        "up": is_up(state),
        "reason": (fields.get("forced_reason") if forced else fields.get("reason")) or None,
        "consecutive_failures": int(fields.get("fails") or 0),
        "consecutive_probe_failures": int(fields.get("pfails") or 0),
        "opened_at": _ms_iso(fields.get("opened_at")) if circuit != "closed" else None,
        "error_rate": _float(fields.get("err"), 4),
        "latency_ewma_ms": _float(fields.get("lat"), 1),
        "last_probe": None,
        "forced": None,
    }
    if fields.get("probe_at"):
        out["last_probe"] = {"at": _ms_iso(fields["probe_at"]), "ok": fields.get("probe_ok") == "1",
                             "latency_ms": _float(fields.get("probe_ms"), 1),
                             "error": fields.get("probe_err") or None}
    if forced:
        out["forced"] = {"state": forced, "reason": fields.get("forced_reason") or None,
                         "by": fields.get("forced_by") or None, "at": _ms_iso(fields.get("forced_at"))}
    return out


_history_cache: dict[tuple[str, ...], tuple[float, dict[str, dict[str, Any]]]] = {}
HISTORY_CACHE_S = 5.0


async def _history(rt: runtime.Runtime, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Uptime/percentiles change slowly; a status page polled by many users must not turn into a
    30-day scan per request. Live state (Redis) is never cached."""
    key = tuple(sorted(ids))
    cached = _history_cache.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[0] < HISTORY_CACHE_S:
        return cached[1]
    value = await store.history(rt.pool, ids)
    if len(_history_cache) > 64:
        _history_cache.clear()
    _history_cache[key] = (now, value)
    return value


def has_evidence(fields: dict[str, str]) -> bool:
    """Whether anything was ever observed about a deployment: a probe result, a traffic outcome
    (the error-rate EWMA is written by the first one), a circuit that moved, or an override."""
    return bool(fields.get("probe_at") or fields.get("err") not in (None, "")
                or (fields.get("state") or "closed") != "closed" or fields.get("forced"))


NO_UPTIME = {"24h": None, "7d": None, "30d": None}


def judge(entry: dict[str, Any], fields: dict[str, str], platform_status: str | None) -> dict[str, Any]:
    """Say only what is known. ``byok_only`` / ``unconfigured`` (a platform setting is unset: nothing
    the platform could measure) and ``unknown`` (never probed, never called) have ``up`` and uptime
    ``null``, not "100%". Routing treats ``unknown`` like a closed circuit; ``byok_only`` serves only
    callers with their own key, ``unconfigured`` nobody (``core.catalog``)."""
    if fields.get("forced"):
        return entry
    if platform_status is not None or not has_evidence(fields):
        entry.update(status=platform_status or "unknown", up=None, uptime=dict(NO_UPTIME))
    return entry


def _provider_status(deployments: list[dict[str, Any]]) -> str:
    ups = [d["up"] for d in deployments if d["up"] is not None]
    if not ups:
        statuses = {d["status"] for d in deployments}
        return statuses.pop() if len(statuses) == 1 else "unknown"
    return "healthy" if all(ups) else "down" if not any(ups) else "degraded"


async def snapshot(rt: runtime.Runtime, admin: bool, model_group: str | None = None) -> dict[str, Any]:
    svc = health_service.get(rt)
    svc.reload_catalog()
    deployments = [d for d in svc.deployments.values() if model_group is None or d.model_group == model_group]
    ids = [d.model_id for d in deployments]
    live = await svc.circuits.read(ids)
    hist = await _history(rt, ids)
    routing_excluded = view.unhealthy_model_ids()
    now = now_ms()
    cooldown_ms = int(svc.settings.cooldown_s * 1000)
    providers: dict[str, list[dict[str, Any]]] = {}
    excluded = frozenset(svc.settings.probe_exclude_model_groups)
    for d in sorted(deployments, key=lambda x: (x.provider, x.model_group, x.model_id)):
        fields = live.get(d.model_id, {})
        not_probed = d.not_probed_reason(excluded)
        entry = {**d.public(), **describe(fields, cooldown_ms, now),
                 **hist.get(d.model_id, {}), "excluded_from_routing": d.model_id in routing_excluded,
                 "probed": not_probed is None, "not_probed_reason": not_probed,
                 "byok_only": d.platform_status == "byok_only", "missing_settings": list(d.missing)}
        judge(entry, fields, d.platform_status)
        if admin:
            entry["endpoint"] = d.endpoint
        providers.setdefault(d.provider, []).append(entry)
    body: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "providers": [{"provider": name, "status": _provider_status(items), "deployments": items}
                      for name, items in providers.items()],
    }
    if admin:
        holder = await rt.redis.get(f"{rt.settings.redis_key_prefix}health:prober")
        body["prober"] = {"holder": holder.decode() if holder else None,
                          "interval_s": svc.settings.probe_interval_s,
                          "enabled": svc.settings.probe_enabled}
    return body


@router.get("")
async def health(model_group: str | None = None, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    return await snapshot(runtime.get(), caller.is_admin, model_group)


@router.get("/audit")
async def audit(model_id: str | None = None, limit: int = 100,
                caller: Caller = Depends(admin_caller)) -> dict[str, Any]:
    if not 1 <= limit <= 1000:
        bad_request("limit must be between 1 and 1000", "limit")
    return {"entries": await store.audit_log(runtime.get().pool, model_id, limit)}


@router.post("/deployments/{model_id}/force")
async def force(model_id: str, request: Request, caller: Caller = Depends(admin_caller)) -> dict[str, Any]:
    """Body ``{"state": "down" | "up" | "auto", "reason": "..."}``; audited with who and why."""
    try:
        body = await request.json()
    except ValueError:
        bad_request("body must be JSON: {\"state\": \"down\"|\"up\"|\"auto\", \"reason\": \"...\"}")
    if not isinstance(body, dict):
        bad_request("body must be a JSON object")
    state, reason = body.get("state"), body.get("reason")
    if state not in ("down", "up", "auto"):
        bad_request("state must be one of: down, up, auto", "state")
    if not isinstance(reason, str) or not reason.strip():
        bad_request("reason is required (it is kept in the audit log)", "reason")
    if len(reason) > MAX_REASON:
        bad_request(f"reason is longer than {MAX_REASON} characters", "reason")
    unknown = set(body) - {"state", "reason"}
    if unknown:
        bad_request(f"unknown field(s): {', '.join(sorted(unknown))}")
    rt = runtime.get()
    svc = health_service.get(rt)
    svc.reload_catalog()
    if model_id not in svc.deployments:
        not_found(f"no deployment with id {model_id!r} (see GET /plugins/health)", "model_id")
    actor = caller.user_id or (f"key:…{caller.key_hash[-4:]}" if caller.key_hash else "admin")
    reason = reason.strip()
    forced = "" if state == "auto" else state
    # Postgres first: it is the record the refresher restores Redis from (e.g. after a Redis flush),
    # so it must never lag behind what Redis says.
    await store.record_audit(rt.pool, model_id, f"force_{state}" if forced else "auto", reason, actor)
    old, new = await svc.circuits.force(model_id, forced, reason, actor)
    await svc.record_change(model_id, old, new, f"operator {actor}: {reason}")
    live = await svc.circuits.read([model_id])
    return {**svc.deployments[model_id].public(),
            **describe(live[model_id], int(svc.settings.cooldown_s * 1000), now_ms())}
