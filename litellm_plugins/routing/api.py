"""``GET /plugins/routing/policy``: what the calling key may ask for, and what would serve it now.

A user key sees its own tier (levels, default level, nameable models, each level's candidates with
their current availability); an admin may pass ``?tier=`` to see any tier. Read-only, from memory.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Body, Depends, Query

from litellm_plugins.core import catalog, runtime
from litellm_plugins.core.errors import bad_request, forbidden, not_found
from litellm_plugins.core.identity import Caller
from litellm_plugins.core.routes import current_caller, resolve_account
from litellm_plugins.credits.money import charge_units, fmt, hold_units
from litellm_plugins.credits.pricing import GroupPrice, build_price_table, estimate_prompt_tokens, requested_output_tokens
from litellm_plugins.routing import availability, store
from litellm_plugins.routing.hook import _State, current_state

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

    account = caller.account(runtime.get().settings.account_order)
    saved = state.defaults.level(account)
    return {
        "tier": rule.name,
        "account": account,
        "account_default_level": saved,
        "levels": {name: {"candidates": [candidate(g) for g in policy.levels[name]]}
                   for name in rule.level_list},
        "default_level": rule.default_level or policy.default_level,
        "models": "*" if rule.any_model else sorted(rule.models),
        "all_levels": list(policy.level_names),
        "capability_check": policy.capability_check,
        "escalate_for_capability": state.settings.escalate_for_capability,
        "degrade_when_low_credits": state.settings.degrade_when_low_credits,
    }


# ---- an account's own default level ------------------------------------------------------------

def _state_or_404() -> _State:
    state = current_state()
    if state is None:
        not_found("routing is not enabled")
    return state


@router.get("/default-level")
async def get_default_level(account: str | None = Query(default=None, max_length=512),
                            caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    _state_or_404()
    acct = resolve_account(caller, account, "read or change")
    async with runtime.get().pool.acquire() as conn:
        row = await store.get(conn, acct)
    return {"account": acct, "default_level": row["default_level"] if row else None,
            "updated_at": row["updated_at"].isoformat() if row else None}


@router.put("/default-level")
async def put_default_level(body: Any = Body(default=None), caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    """Body ``{"default_level": "balanced" | null, "account"?: admin only}``. The level must be one
    the caller's tier allows (for an admin setting another account: any configured level)."""
    state = _state_or_404()
    if not isinstance(body, dict) or "default_level" not in body:
        bad_request('body must be {"default_level": "<level>" | null}', "default_level")
    unknown = set(body) - {"default_level", "account"}
    if unknown:
        bad_request(f"unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    acct = resolve_account(caller, body.get("account"), "read or change")
    level = body["default_level"]
    policy = state.policy
    if level is not None:
        if not isinstance(level, str) or level not in policy.levels:
            bad_request(f"default_level must be one of {', '.join(policy.level_names)} or null", "default_level")
        own = acct == caller.account(runtime.get().settings.account_order)
        if own:
            tier = policy.tier_of(caller.metadata, caller.team_metadata, caller.is_admin)
            if level not in tier.levels:
                forbidden(f"tier {tier.name!r} does not allow power level {level!r}; it allows "
                          f"{', '.join(tier.level_list)}", "default_level")
    async with runtime.get().pool.acquire() as conn:
        await store.save(conn, acct, level, caller.user_id or (caller.key_hash or "")[-8:] or None)
    state.defaults.put(acct, level)  # this worker at once; the others within account_defaults_refresh_s
    return {"account": acct, "default_level": level}


# ---- quote: what a request would cost at each level, without calling a provider ----------------

DEFAULT_EXPECTED_OUTPUT_TOKENS = 256
RECENT_DAYS = 30
_prices: tuple[object, dict[str, GroupPrice]] | None = None


def _price_table(rt: runtime.Runtime) -> dict[str, GroupPrice]:
    global _prices
    if _prices is None or _prices[0] is not rt:
        _prices = (rt, build_price_table(rt.config.get("model_list") or []))
    return _prices[1]


async def _recent(account: str | None) -> dict[str, Any]:
    if account is None:
        return {"requests": 0, "avg_prompt_tokens": None, "avg_completion_tokens": None}
    since = datetime.now(timezone.utc) - timedelta(days=RECENT_DAYS)
    async with runtime.get().pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, round(avg(prompt_tokens))::int AS p, round(avg(completion_tokens))::int AS c "
            "FROM usage_log WHERE account = $1 AND created_at >= $2 AND status = 'success'", account, since)
    return {"requests": row["n"], "avg_prompt_tokens": row["p"], "avg_completion_tokens": row["c"],
            "days": RECENT_DAYS}


@router.post("/quote")
async def quote(body: Any = Body(default=None), caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    """Price a chat request body at every level the caller's tier allows: the group that would
    serve it now, the worst-case hold credits would place (over the group and its fallbacks) and
    the expected charge (estimated prompt + expected output tokens); also the same for the caller's
    own average request of the last 30 days. Nothing is held, charged or sent to a provider."""
    state = _state_or_404()
    if not isinstance(body, dict):
        bad_request("body must be a chat completion request object (messages, max_tokens, ...)")
    if "messages" in body and not isinstance(body["messages"], list):
        bad_request("messages must be a list", "messages")
    rt = runtime.get()
    credits = rt.settings.credits
    policy = state.policy
    rule = policy.tier_of(caller.metadata, caller.team_metadata, caller.is_admin)
    markup = credits.markup(rule.name) if credits.enabled else Decimal(1)
    prices = _price_table(rt)
    snap = availability.snapshot()
    unhealthy = availability.unhealthy_ids()
    now = availability.now()
    restrict = policy.key_restriction(caller.models)
    account = caller.account(rt.settings.account_order)
    recent = await _recent(account)
    prompt = estimate_prompt_tokens(body, credits.prompt_bytes_per_token)
    asked_output = requested_output_tokens(body)

    def expected_units(price: GroupPrice | None, prompt_tokens: int, output_tokens: int) -> int:
        if price is None:
            return 0
        usd = prompt_tokens * price.input_per_token + output_tokens * price.output_per_token
        return charge_units(usd, credits.credits_per_usd, markup)

    def worst_units(price: GroupPrice | None) -> int:
        if price is None:
            return 0
        output = asked_output or price.max_output_tokens or credits.default_max_output_tokens
        return hold_units(prompt * price.input_per_token + output * price.output_per_token,
                          credits.credits_per_usd, markup)

    levels = []
    for name in rule.level_list:
        candidates = []
        for group in policy.levels[name]:
            hit = snap.blocked(group, unhealthy, now) if snap is not None else None
            price = prices.get(group)
            output = min(asked_output or DEFAULT_EXPECTED_OUTPUT_TOKENS,
                         (price.max_output_tokens if price and price.max_output_tokens else 1 << 30))
            candidates.append({
                "model_group": group, "available": hit is None,
                "allowed_for_key": restrict is None or group in restrict,
                "hold": fmt(worst_units(price)), "expected": fmt(expected_units(price, prompt, output)),
                "recent_expected": (fmt(expected_units(price, recent["avg_prompt_tokens"] or 0,
                                                       recent["avg_completion_tokens"] or 0))
                                    if recent["requests"] else None),
            })
        usable = [c for c in candidates if c["available"] and c["allowed_for_key"]]
        chosen = usable[0] if usable else None
        levels.append({
            "level": name, "model_group": chosen["model_group"] if chosen else None,
            # the hold covers the chosen group and every fallback routing would add (credits/pricing.py)
            "hold": max((c["hold"] for c in usable), key=Decimal) if usable else None,
            "expected": chosen["expected"] if chosen else None,
            "recent_expected": chosen["recent_expected"] if chosen else None,
            # healthy first, then in the level's own order
            "candidates": sorted(candidates, key=lambda c: not (c["available"] and c["allowed_for_key"])),
        })
    return {"tier": rule.name, "prompt_tokens_estimate": prompt,
            "output_tokens": asked_output or DEFAULT_EXPECTED_OUTPUT_TOKENS,
            "credits_enabled": credits.enabled, "markup": format(markup.normalize(), "f"),
            "recent": recent, "levels": levels}
