"""LiteLLM hooks of the routing capability: pick the model group for a power level, say so in headers.

``async_pre_call_hook`` rewrites ``data["model"]`` to the chosen group and sets ``data["fallbacks"]``
to the level's other allowed, available candidates (LiteLLM honours a request-level list of group
names before any configured fallback, for every error type). It always *overwrites* ``fallbacks``,
``context_window_fallbacks`` and ``content_policy_fallbacks`` on a routed request, so neither the
client's body nor ``router_settings`` can fall back to a model the caller's tier may not use.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

from litellm_plugins.core import catalog, context
from litellm_plugins.core.errors import bad_request
from litellm_plugins.core.identity import Caller, account_id
from litellm_plugins.metrics import record as metrics
from litellm_plugins.routing import availability
from litellm_plugins.routing.capabilities import NO_NEEDS, needs_of
from litellm_plugins.routing.policy import BYOK_ONLY, Decision, Policy
from litellm_plugins.routing.settings import AUTO, CUSTOM
from litellm_plugins.routing.store import AccountDefaults

if TYPE_CHECKING:
    from litellm_plugins.core.runtime import Runtime

log = logging.getLogger("litellm_plugins.routing")

HEADER_LEVEL = "x-litellm-plugins-power-level"
HEADER_TIER = "x-litellm-plugins-tier"
HEADER_GROUP = "x-litellm-plugins-model-group"
HEADER_DEGRADED = "x-litellm-plugins-degraded"
HEADER_ESCALATED = "x-litellm-plugins-escalated"
REQUEST_HEADER = "x-power-level"
BODY_FIELD = "power_level"
# Route types (the proxy's ``call_type``) that power levels apply to: chat and text completions,
# the Responses API (/v1/responses) and Anthropic's Messages API (/v1/messages).
ROUTED_CALLS = frozenset({"acompletion", "completion", "atext_completion", "text_completion",
                          "aresponses", "responses", "anthropic_messages"})
ROUTED_ROUTES = "/v1/chat/completions, /v1/completions, /v1/responses and /v1/messages"
FALLBACK_FIELDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
ADMIN_ROLE = LitellmUserRoles.PROXY_ADMIN.value


class _State:
    """Everything precomputed for this worker; rebuilt when the runtime object changes."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings = rt.settings.routing
        self.policy = Policy(self.settings, rt.config)
        self.defaults = AccountDefaults()  # accounts' saved default levels (routing/store.py)
        self.credits: Any = None
        if self.settings.degrade_when_low_credits and rt.settings.credits.enabled:
            try:
                self.credits = importlib.import_module("litellm_plugins.credits.public")
            except ModuleNotFoundError:
                log.warning("routing: degrade_when_low_credits is on but litellm_plugins.credits.public "
                            "is not available; not degrading")


_state: _State | None = None


_runtime_module: Any = None


def current_state() -> _State | None:
    global _state, _runtime_module
    if _runtime_module is None:
        # Late import: core.settings imports this package, and core.runtime imports core.settings.
        from litellm_plugins.core import runtime as runtime_module
        _runtime_module = runtime_module
    rt = _runtime_module.current()
    if rt is None or not rt.settings.routing.enabled:
        return None
    state = _state
    if state is None or state.rt is not rt:
        _state = state = _State(rt)
    return state


async def start(rt: Runtime) -> None:
    """Compile the policy at worker start (core.startup calls this once, when routing is enabled)."""
    global _state
    _state = state = _State(rt)
    if rt.pool is None:  # a microbenchmark compiling the policy without a database
        return
    await state.defaults.refresh(rt.pool)
    rt.tasks.start("routing_account_defaults",
                   lambda: state.defaults.keep_fresh(rt.pool, state.settings.account_defaults_refresh_s))


def _header(data: dict[str, Any]) -> Any:
    headers = (data.get("proxy_server_request") or {}).get("headers") or {}
    value = headers.get(REQUEST_HEADER)
    if value is None and headers:
        for name, candidate in headers.items():
            if isinstance(name, str) and name.lower() == REQUEST_HEADER:
                return candidate
    return value


def _is_admin(auth: UserAPIKeyAuth) -> bool:
    role = auth.user_role
    return (role.value if isinstance(role, LitellmUserRoles) else role) == ADMIN_ROLE


# Context key: the providers the caller holds a usable BYOK key for (a tuple: the context travels in
# LiteLLM's metadata, which logging integrations serialise). Set only while some deployment is BYOK-only.
OWN_PROVIDERS = "byok_providers"


async def _keyless_for(auth: UserAPIKeyAuth, data: dict) -> frozenset[str]:
    """BYOK-only deployment ids this caller cannot use (no platform key, no key of theirs).

    Costs nothing while every deployment has its platform config; otherwise one lookup in BYOK's
    per-worker key cache (which the BYOK pre-call hook right after us would do anyway).
    """
    cat = catalog.snapshot()
    if cat is None or not cat.byok_only:
        return frozenset()
    from litellm_plugins.byok import public as byok_public  # late: byok imports core at load
    own = await byok_public.providers_for_auth(auth)
    context.for_request(data)[OWN_PROVIDERS] = tuple(sorted(own))
    return cat.keyless_for(own)


async def _own_providers(request_kwargs: dict | None) -> frozenset[str]:
    """The caller's providers from the request context routing recorded, else from BYOK directly."""
    kwargs = request_kwargs or {}
    metadata = context.litellm_metadata(kwargs)
    if metadata is None:
        return frozenset()
    ctx = metadata.get(context.CONTEXT_KEY)
    if isinstance(ctx, context.RequestContext) and OWN_PROVIDERS in ctx:
        return frozenset(ctx[OWN_PROVIDERS])
    from litellm_plugins.byok import public as byok_public
    return await byok_public.providers_for_metadata(metadata)


class RoutingHook(CustomLogger):
    """Hook methods must be defined on this class itself: LiteLLM skips inherited overrides."""

    async def async_filter_deployments(self, model: str, healthy_deployments: list, messages: Any,
                                       request_kwargs: dict | None = None,
                                       parent_otel_span: Any = None) -> list[dict]:
        """Within a group, drop BYOK-only deployments the caller has no key for (``core.catalog``).

        Routing already skips a group whose every deployment is BYOK-only for this caller; this
        covers mixed groups, fallbacks and calls routing does not route (embeddings naming a model).
        """
        cat = catalog.snapshot()
        if cat is None or not cat.byok_only:  # the common case: every deployment has its key
            return healthy_deployments
        if not any((d.get("model_info") or {}).get("id") in cat.byok_only for d in healthy_deployments):
            return healthy_deployments
        keyless = cat.keyless_for(await _own_providers(request_kwargs))
        kept = [d for d in healthy_deployments if (d.get("model_info") or {}).get("id") not in keyless]
        if kept or not healthy_deployments:
            return kept
        missing = sorted({n for d in healthy_deployments
                          for n in cat.entries[str(d["model_info"]["id"])].missing})
        providers = sorted({e.provider for d in healthy_deployments
                            if (e := cat.entries[str(d["model_info"]["id"])]).byok_servable})
        who = (f"it serves only callers with their own key for {', '.join(providers)} (POST /plugins/byok/keys)"
               if providers else "it cannot serve anyone until the operator sets them")
        # A clean 503 LiteLLM's fallbacks run on, at once, instead of a slow failure at the provider.
        raise litellm.ServiceUnavailableError(
            message=f"model {model!r} is not configured on this proxy ({', '.join(missing)} unset): {who}",
            model=model, llm_provider="")

    async def async_pre_call_hook(self, user_api_key_dict: UserAPIKeyAuth, cache: Any, data: dict,
                                  call_type: Any) -> dict | None:
        state = current_state()
        if state is None:
            return None
        body_level = data.pop(BODY_FIELD, None)  # never forwarded to a provider, whatever the call
        model = data.get("model")
        if not isinstance(model, str):
            return None
        policy = state.policy
        if call_type not in ROUTED_CALLS:
            if model in policy.levels or model == AUTO:
                bad_request(f"power levels apply to {ROUTED_ROUTES}; name a model for this "
                            f"call ({call_type})", param="model")
            if any(data.get(f) for f in FALLBACK_FIELDS):
                self._limit_client_fallbacks(policy, user_api_key_dict, data)
            return None

        key_meta = user_api_key_dict.metadata or {}
        team_meta = user_api_key_dict.team_metadata or {}
        tier = policy.tier_of(key_meta, team_meta, _is_admin(user_api_key_dict))
        account_level = None
        if model == AUTO and state.defaults.active:
            account_level = state.defaults.level(account_id(
                user_api_key_dict.user_id, user_api_key_dict.team_id,
                user_api_key_dict.token or user_api_key_dict.api_key, state.rt.settings.account_order))
        level, source = policy.level_of(model, _header(data), body_level, key_meta, team_meta, tier, account_level)
        snap = availability.snapshot()
        if snap is None:
            def blocked(group: str) -> None:
                return None
        else:
            unhealthy = availability.unhealthy_ids()
            now = availability.now()
            keyless = await _keyless_for(user_api_key_dict, data)

            def blocked(group: str) -> float | bool | str | None:
                hit = snap.blocked(group, unhealthy, now, keyless)
                if hit is None:
                    return None
                if hit.byok_only:
                    return BYOK_ONLY
                return hit.retry_after if hit.retry_after is not None else True

        needs = needs_of(data, state.settings.chars_per_token) if policy.capability_check else NO_NEEDS
        decision = policy.decide(model=model, tier=tier, level=level, level_source=source,
                                 key_models=user_api_key_dict.models, blocked=blocked, needs=needs)
        if state.credits is not None and decision.level != CUSTOM:
            decision = await self._maybe_degrade(state, decision, tier, user_api_key_dict, data, blocked,
                                                 needs)

        data["model"] = decision.model_group
        data["fallbacks"] = list(decision.fallbacks)
        data["context_window_fallbacks"] = []
        data["content_policy_fallbacks"] = []
        ctx = context.for_request(data)
        ctx["requested_model"] = model
        ctx["power_level"] = decision.level
        ctx["tier"] = decision.tier
        ctx["model_group"] = decision.model_group
        ctx["degraded"] = decision.degraded
        if decision.escalated:
            ctx["escalated"] = True
            metrics.escalated(decision.requested_level, decision.level)
        if decision.degraded:
            metrics.degraded(decision.requested_level, decision.level)
        return data

    @staticmethod
    def _limit_client_fallbacks(policy: Policy, auth: UserAPIKeyAuth, data: dict) -> None:
        """An unrouted call (embeddings, ...) keeps its fallbacks only within what the tier allows."""
        tier = policy.tier_of(auth.metadata or {}, auth.team_metadata or {}, _is_admin(auth))
        if tier.any_model:
            return
        for field in FALLBACK_FIELDS:
            value = data.get(field)
            if isinstance(value, list):
                data[field] = [g for g in value if isinstance(g, str) and g in tier.models]

    @staticmethod
    async def _maybe_degrade(state: _State, decision: Decision, tier: Any, auth: UserAPIKeyAuth,
                             data: dict, blocked: Any, needs: Any) -> Decision:
        """Move to the next cheaper allowed level when the caller cannot afford this one's hold."""
        credits = state.credits
        # The account credits bills: its own account_order when it has one, else core's.
        order = state.rt.settings.account_order
        caller = Caller.from_auth(auth)
        account = caller.account(order) if order else caller.account()
        if account is None:
            return decision
        try:
            available = await credits.available_units(account)
            if available is None or available >= credits.worst_case_units(decision.model_group, data,
                                                                          tier=decision.tier):
                return decision
            policy = state.policy
            for level in policy.cheaper_levels(decision.level, tier):
                try:
                    cheaper = policy.decide(model=decision.requested_model, tier=tier, level=level,
                                            level_source=decision.level_source, key_models=auth.models,
                                            blocked=blocked, needs=needs)
                except Exception:  # noqa: BLE001 - a cheaper level that cannot serve is just skipped
                    continue
                if available >= credits.worst_case_units(cheaper.model_group, data, tier=decision.tier):
                    if cheaper.escalated:  # escalated back up: not cheaper after all
                        continue
                    return Decision(level, cheaper.tier, cheaper.requested_model, cheaper.model_group,
                                    cheaper.fallbacks, cheaper.level_source, degraded=True,
                                    requested_level=decision.level)
        except Exception:  # noqa: BLE001 - degrading is an optimisation; credits still enforces the hold
            log.exception("routing: credit check for degrade_when_low_credits failed; not degrading")
        return decision

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict | None:
        """Remember the deployment of the latest attempt of a routed request (two dict reads).

        The headers hook names the group that served from the response's hidden params; an
        Anthropic Messages response is a plain dict whose hidden params LiteLLM removes before that
        hook runs, so there the latest attempt -- the one that answered -- says it.
        """
        ctx = context.find(kwargs)
        if ctx is not None and "power_level" in ctx:
            info = kwargs.get("model_info")
            if isinstance(info, dict) and info.get("id") is not None:
                ctx["attempt_model_id"] = info["id"]
        return None

    async def async_post_call_response_headers_hook(self, data: dict, user_api_key_dict: UserAPIKeyAuth,
                                                    response: object, request_headers: dict | None = None,
                                                    litellm_call_info: dict | None = None) -> dict | None:
        if current_state() is None:
            return None
        ctx = context.find(data) or {}
        level = ctx.get("power_level")
        if level is None:
            return None
        served = ctx.get("model_group")
        model_id = (litellm_call_info or {}).get("model_id")
        if model_id is None:
            hidden = getattr(response, "_hidden_params", None) or {}
            model_id = hidden.get("model_id") if isinstance(hidden, dict) else None
        if model_id is None:
            model_id = ctx.get("attempt_model_id")
        if model_id is not None:
            snap = availability.snapshot()
            if snap is not None:
                served = snap.group_of.get(str(model_id), served)
        return {
            HEADER_LEVEL: str(level),
            HEADER_TIER: str(ctx.get("tier")),
            HEADER_GROUP: str(served),
            HEADER_DEGRADED: "true" if ctx.get("degraded") else "false",
            HEADER_ESCALATED: "true" if ctx.get("escalated") else "false",
        }


routing_hook = RoutingHook()
