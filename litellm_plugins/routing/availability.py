"""Is a model group able to take traffic right now? Answered from memory, no I/O per request.

A group is *blocked* when every one of its deployments is either reported unhealthy by the health
capability (``health.view.unhealthy_model_ids()``, a frozenset refreshed in the background) or in
LiteLLM's own cooldown. Cooldowns are read straight from the router's in-memory cooldown tier with
precomputed keys: LiteLLM's ``_async_get_cooldown_deployments`` would batch-read *every* deployment
(and Redis, when the router has one) on each call. When the router shares cooldowns through Redis,
its own routing reads refresh that in-memory tier, so another instance's cooldown becomes visible
here at the latest one request later.

The deployment map (group -> deployment ids -> cooldown keys) is rebuilt only when the router object
or its deployment count changes (models added through LiteLLM's API).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from litellm_plugins.core.catalog import current_router

_COOLDOWN_KEY = "deployment:{}:cooldown"  # litellm.router_utils.cooldown_cache.CooldownCache key format


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a group cannot serve now and when to try again (seconds; None = unknown)."""

    group: str
    retry_after: float | None
    byok_only: bool = False  # every deployment lacks its platform key and the caller has no key of its own


class Availability:
    """Deployment ids per model group, bound to one router instance."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.size = len(getattr(router, "model_list", None) or ())
        ids: dict[str, list[str]] = {}
        group_of: dict[str, str] = {}
        for deployment in getattr(router, "model_list", None) or ():
            group = deployment.get("model_name")
            model_id = (deployment.get("model_info") or {}).get("id")
            if group is None or model_id is None:
                continue
            model_id = str(model_id)
            ids.setdefault(group, []).append(model_id)
            group_of[model_id] = group
        self.ids: dict[str, tuple[str, ...]] = {g: tuple(v) for g, v in ids.items()}
        self.keys: dict[str, tuple[tuple[str, str], ...]] = {
            g: tuple((i, _COOLDOWN_KEY.format(i)) for i in v) for g, v in ids.items()}
        self.group_of = group_of
        cooldown_cache = getattr(router, "cooldown_cache", None)
        memory = getattr(cooldown_cache, "in_memory_cache", None)
        # Keep the cache object, not its dict: LiteLLM may swap ``cache_dict`` on a flush.
        self._memory = memory if isinstance(getattr(memory, "cache_dict", None), dict) else None

    def blocked(self, group: str, unhealthy: frozenset[str], now: float,
                keyless: frozenset[str] = frozenset()) -> Blocked | None:
        """None when at least one deployment of ``group`` may take traffic.

        ``keyless``: BYOK-only deployments this caller cannot use (``core.catalog``: no platform key,
        and no key of the caller's for their provider) -- out for this request, like unhealthy ones.
        """
        keys = self.keys.get(group)
        if not keys:
            return None  # unknown to the router (e.g. added later): let LiteLLM decide
        cooldowns = self._memory.cache_dict if self._memory is not None else None
        soonest: float | None = None
        skipped_keyless = 0
        for model_id, key in keys:
            if model_id in keyless:
                skipped_keyless += 1
                continue
            if model_id in unhealthy:
                continue
            entry = cooldowns.get(key) if cooldowns else None
            if entry is None:
                return None
            until = _cooldown_end(entry)
            if until is None or until <= now:
                return None
            soonest = until if soonest is None else min(soonest, until)
        if skipped_keyless == len(keys):
            return Blocked(group, None, byok_only=True)
        return Blocked(group, None if soonest is None else soonest - now)


def _cooldown_end(entry: Any) -> float | None:
    if isinstance(entry, str):
        try:
            entry = json.loads(entry)
        except ValueError:
            return None
    if not isinstance(entry, dict):
        return None
    try:
        return float(entry["timestamp"]) + float(entry["cooldown_time"])
    except (KeyError, TypeError, ValueError):
        return None


_cached: Availability | None = None


def snapshot() -> Availability | None:
    """The availability map of the live router, rebuilt only when the router changed."""
    global _cached
    router = current_router()
    if router is None:
        return None
    cached = _cached
    if cached is not None and cached.router is router and cached.size == len(router.model_list):
        return cached
    _cached = cached = Availability(router)
    return cached


_health_view: Any = None


def unhealthy_ids() -> frozenset[str]:
    """Deployment ids the health capability took out of rotation (empty while health is off)."""
    global _health_view
    view = _health_view
    if view is None:
        # Imported on first use: importing the health package at module load would close an import
        # cycle (core.settings -> routing -> health -> core.runtime -> core.settings).
        from litellm_plugins.health import view as view_module
        _health_view = view = view_module
    return view.unhealthy_model_ids()


def now() -> float:
    return time.time()
