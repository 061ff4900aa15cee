"""``GET /plugins/routing/policy``: what the calling key may ask for, and what would serve it now.

A user key sees its own tier (levels, default level, nameable models, each level's candidates with
their current availability); an admin may pass ``?tier=`` to see any tier. Read-only, from memory.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from litellm_plugins.core import catalog
from litellm_plugins.core.errors import forbidden, not_found
from litellm_plugins.core.identity import Caller
from litellm_plugins.core.routes import current_caller
from litellm_plugins.routing import availability
from litellm_plugins.routing.hook import current_state

router = APIRouter(prefix="/plugins/routing", tags=["litellm-plugins: routing"])


@router.get("/policy")
async def policy_for_caller(tier: str | None = Query(default=None),
                            caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    state = current_state()
    if state is None:
        not_found("routing is not enabled")
    policy = state.policy
    if tier is not None and not caller.is_admin:
        own = policy.tier_of(caller.metadata, caller.team_metadata, caller.is_admin).name
        if tier != own:
            forbidden("a non-admin key can only read its own tier", param="tier")
    if tier is not None:
        rule = policy.tiers.get(tier)
        if rule is None:
            not_found(f"unknown tier {tier!r}; known tiers: {', '.join(policy.tiers)}", param="tier")
    else:
        rule = policy.tier_of(caller.metadata, caller.team_metadata, caller.is_admin)
    snap = availability.snapshot()
    unhealthy = availability.unhealthy_ids()
    now = availability.now()
    restrict = policy.key_restriction(caller.models) if tier is None else None
    cat = catalog.snapshot()
    keyless: frozenset[str] = frozenset()
    if cat is not None and cat.byok_only:
        from litellm_plugins.byok import public as byok_public
        own = await byok_public.providers_for(caller.user_id, caller.team_id, caller.key_hash)
        keyless = cat.keyless_for(own)

    def candidate(group: str) -> dict[str, Any]:
        hit = snap.blocked(group, unhealthy, now, keyless) if snap is not None else None
        out: dict[str, Any] = {
            "model_group": group, "available": hit is None,
            "allowed_for_key": restrict is None or group in restrict,
            "retry_after_s": None if hit is None or hit.retry_after is None else round(hit.retry_after, 1),
            # every deployment lacks its platform config: only callers with their own key for one of
            # `byok_providers` are routed here (none: unconfigured); `available` says if this caller is
            "byok_only": cat is not None and group in cat.byok_only_groups}
        if out["byok_only"]:
            out["byok_providers"] = sorted(cat.byok_only_groups[group])
        return out

    return {
        "tier": rule.name,
        "levels": {name: {"candidates": [candidate(g) for g in policy.levels[name]]}
                   for name in rule.level_list},
        "default_level": rule.default_level or policy.default_level,
        "models": "*" if rule.any_model else sorted(rule.models),
        "all_levels": list(policy.level_names),
        "capability_check": policy.capability_check,
        "escalate_for_capability": state.settings.escalate_for_capability,
        "degrade_when_low_credits": state.settings.degrade_when_low_credits,
    }
