"""The routing policy compiled once per worker, and the routing decision itself.

``Policy`` turns the settings into frozen lookup tables at startup (candidate tuples, per-tier sets
of allowed levels and model groups, the tiers that allow each level); ``Policy.decide`` is then a
handful of dictionary lookups per request. It is synchronous and free of I/O so the benchmark can
time exactly the work routing adds to a request (``benchmarks/micro_routing.py``).

Precedence (first match wins):
  level: model ``eco``/``balanced``/``precision`` > (model ``auto``:) header ``X-Power-Level`` > body
         ``power_level`` > key metadata ``power_level`` > team metadata ``power_level`` > the account's
         own default (saved from the console; ignored if the tier does not allow it) > tier's
         ``default_level`` > ``default_level``; any other model name is ``custom``.
  tier:  key metadata ``tier`` > team metadata ``tier`` > ``admin_tier`` (proxy admins) > ``default_tier``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from litellm_plugins.core.errors import bad_request, forbidden, service_unavailable
from litellm_plugins.routing.capabilities import CONTEXT, NO_NEEDS, Needs, Offer, missing, offers_from_config
from litellm_plugins.routing.settings import ANY_MODEL, AUTO, CUSTOM, RoutingSettings

# Key `models` entries meaning "every model" in LiteLLM.
UNRESTRICTED_KEY_MODELS = frozenset({"*", "all-proxy-models"})


@dataclass(frozen=True, slots=True)
class TierRule:
    name: str
    levels: frozenset[str]
    level_list: tuple[str, ...]
    default_level: str | None
    any_model: bool
    models: frozenset[str]  # every group the tier may be routed to or name: its `models` + its levels' candidates


@dataclass(frozen=True, slots=True)
class Decision:
    level: str            # eco / balanced / precision / custom
    tier: str
    requested_model: str
    model_group: str      # what data["model"] becomes
    fallbacks: tuple[str, ...]
    level_source: str     # model / header / body / key / team / account / tier / default / custom
    degraded: bool = False
    requested_level: str | None = None  # the level asked for, when degraded or escalated
    escalated: bool = False             # moved to a pricier level because the asked one cannot serve


# A group is usable when this returns None; otherwise seconds until it may be (True = unknown), or
# BYOK_ONLY: every deployment lacks its platform key and the caller holds no key of its providers.
BlockedFn = Callable[[str], "float | None | bool | str"]
BYOK_ONLY = "byok_only"


class Policy:
    def __init__(self, settings: RoutingSettings, config: Mapping[str, Any]) -> None:
        self.settings = settings
        self.levels: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in settings.levels.items()}
        self.level_names = tuple(self.levels)
        self.level_rank = {name: i for i, name in enumerate(self.level_names)}
        self.groups = frozenset(m.get("model_name") for m in config.get("model_list") or []
                                if isinstance(m, dict) and m.get("model_name"))
        self.tiers: dict[str, TierRule] = {}
        for name, tier in settings.tiers.items():
            allowed = set(g for g in tier.models if g != ANY_MODEL)
            for level in tier.levels:
                allowed.update(self.levels.get(level, ()))
            any_model = ANY_MODEL in tier.models
            self.tiers[name] = TierRule(
                name=name, levels=frozenset(tier.levels), level_list=tuple(tier.levels),
                default_level=tier.default_level, any_model=any_model,
                models=frozenset(self.groups if any_model else allowed))
        self.default_tier = settings.default_tier
        self.default_level = settings.default_level
        self.admin_tier = settings.admin_tier or settings.default_tier
        self.tiers_for_level = {level: tuple(t.name for t in self.tiers.values() if level in t.levels)
                                for level in self.levels}
        self.custom_fallbacks = _router_fallbacks(config)
        self.valid_levels_text = ", ".join((*self.level_names, AUTO))
        # capability-aware routing: what each group offers, and the limits every group meets (a
        # request within them that needs no special capability skips the per-candidate check)
        self.capability_check = settings.capability_check
        self.offers: dict[str, Offer] = offers_from_config(config) if settings.capability_check else {}
        # (over the groups a level or a tier's `models` names; embeddings with 512-token inputs
        # elsewhere in model_list must not disable the fast path for every chat request)
        self.safe_groups = frozenset(g for c in self.levels.values() for g in c) | frozenset(
            g for t in settings.tiers.values() for g in t.models if g != ANY_MODEL)
        safe = [self.offers[g] for g in self.safe_groups if g in self.offers]
        limits_in = [o.max_input for o in safe if o.max_input is not None]
        limits_out = [o.max_output for o in safe if o.max_output is not None]
        self.safe_input = min(limits_in) if limits_in else 1 << 62
        self.safe_output = min(limits_out) if limits_out else 1 << 62

    def trivial(self, needs: Needs) -> bool:
        """True when every group can serve ``needs`` (no capability, within every limit)."""
        return (not needs.caps and needs.input_tokens <= self.safe_input
                and (needs.output_tokens is None or needs.output_tokens <= self.safe_output))

    def can_serve(self, group: str, needs: Needs) -> bool:
        return not missing(self.offers.get(group), needs)

    # ---- who is asking ------------------------------------------------------------------------
    def tier_of(self, key_meta: Mapping[str, Any], team_meta: Mapping[str, Any], is_admin: bool) -> TierRule:
        name = key_meta.get("tier") or team_meta.get("tier")
        source = "key metadata" if key_meta.get("tier") else "team metadata"
        if not name:
            name = self.admin_tier if is_admin else self.default_tier
            source = "default"
        tier = self.tiers.get(name) if isinstance(name, str) else None
        if tier is None:
            forbidden(f"tier {name!r} (from {source}) is not a configured tier; known tiers: "
                      f"{', '.join(self.tiers)}", param="tier")
        return tier

    def tiers_allowing_model(self, group: str) -> list[str]:
        return [t.name for t in self.tiers.values() if group in t.models]

    def level_of(self, model: str, header: Any, body: Any, key_meta: Mapping[str, Any],
                 team_meta: Mapping[str, Any], tier: TierRule,
                 account_level: str | None = None) -> tuple[str, str]:
        """(level, source); ``custom`` for a model name that is neither a level nor ``auto``."""
        if model in self.levels:
            return model, "model"
        if model != AUTO:
            return CUSTOM, CUSTOM
        for value, source in ((header, "header"), (body, "body"), (key_meta.get("power_level"), "key"),
                              (team_meta.get("power_level"), "team")):
            if value is not None and value != "":
                return self._known_level(value, source), source
        if account_level is not None and account_level in tier.levels:
            return account_level, "account"
        if tier.default_level is not None:
            return tier.default_level, "tier"
        return self.default_level, "default"

    def _known_level(self, value: Any, source: str) -> str:
        level = value.strip().lower() if isinstance(value, str) else value
        if level not in self.levels:
            where = {"header": "header X-Power-Level", "body": "body field power_level",
                     "key": "key metadata power_level", "team": "team metadata power_level"}[source]
            bad_request(f"unknown power level {value!r} (from {where}); valid power levels: "
                        f"{', '.join(self.level_names)}", param="power_level")
        return level

    # ---- the decision -------------------------------------------------------------------------
    def decide(self, *, model: str, tier: TierRule, level: str, level_source: str,
               key_models: Iterable[str] | None, blocked: BlockedFn, needs: Needs = NO_NEEDS) -> Decision:
        """Pick the model group; raises the OpenAI-shaped 400/403/503 the caller should get."""
        restrict = self.key_restriction(key_models)
        check = self.capability_check and not self.trivial(needs)
        if level == CUSTOM:
            check = check or (self.capability_check and model not in self.safe_groups)
            return self._custom(model, tier, restrict, blocked, needs if check else None)
        if level not in tier.levels:
            allowing = self.tiers_for_level.get(level) or ()
            forbidden(f"power level {level!r} is not allowed for tier {tier.name!r}; "
                      + (f"tiers that allow it: {', '.join(allowing)}" if allowing else "no tier allows it"),
                      param="power_level")
        candidates = self.levels[level]
        if restrict is not None:
            candidates = tuple(g for g in candidates if g in restrict)
            if not candidates:
                forbidden(f"this key may not use any model of power level {level!r} "
                          f"(its models: {', '.join(sorted(restrict))})", param="model")
        if check:
            able = tuple(g for g in candidates if self.can_serve(g, needs))
            if not able:
                return self._escalate(model, tier, level, level_source, restrict, blocked, needs, candidates)
            candidates = able
        chosen, fallbacks = self._first_available(candidates, blocked, f"power level {level!r}")
        return Decision(level, tier.name, model, chosen, fallbacks, level_source)

    def _escalate(self, model: str, tier: TierRule, level: str, level_source: str,
                  restrict: frozenset[str] | None, blocked: BlockedFn, needs: Needs,
                  candidates: tuple[str, ...]) -> Decision:
        """No candidate of ``level`` can serve: a pricier allowed level if enabled, else a 400."""
        if self.settings.escalate_for_capability:
            for higher in self.level_names[self.level_rank[level] + 1:]:
                if higher not in tier.levels:
                    continue
                able = tuple(g for g in self.levels[higher]
                             if (restrict is None or g in restrict) and self.can_serve(g, needs))
                if able:
                    chosen, fallbacks = self._first_available(able, blocked, f"power level {higher!r}")
                    return Decision(higher, tier.name, model, chosen, fallbacks, level_source,
                                    requested_level=level, escalated=True)
        lacking = [item for item in (*sorted(needs.caps), CONTEXT)
                   if all(item in missing(self.offers.get(g), needs) for g in candidates)]
        if not lacking:  # each candidate lacks something different: name everything asked for
            lacking = missing(self.offers.get(candidates[0]), needs)
        levels = [name for name in tier.level_list
                  if any(self.can_serve(g, needs) and (restrict is None or g in restrict)
                         for g in self.levels[name])]
        bad_request(f"no model of power level {level!r} can serve this request: it needs "
                    f"{needs.describe(lacking)}; " + self._who_can(tier, needs, levels), param="model")

    def _who_can(self, tier: TierRule, needs: Needs, levels: list[str] | None = None) -> str:
        models = sorted(g for g in tier.models if self.can_serve(g, needs) and g in self.offers)
        shown = ", ".join(models[:8]) + (f" (+{len(models) - 8} more)" if len(models) > 8 else "")
        text = "" if levels is None else (
            f"power levels your tier allows that can: {', '.join(levels)}; " if levels
            else "no power level your tier allows can; ")
        return text + (f"models your tier allows that can: {shown}" if models
                       else "no model your tier allows can")

    def _custom(self, model: str, tier: TierRule, restrict: frozenset[str] | None,
                blocked: BlockedFn, needs: Needs | None) -> Decision:
        if model not in self.groups:
            if tier.any_model:
                # Not a configured group (wildcard/alias/deployment id): LiteLLM decides, as without us.
                return Decision(CUSTOM, tier.name, model, model, (), CUSTOM)
            bad_request(f"unknown model {model!r}; use a power level ({self.valid_levels_text}) or one of "
                        f"the models your tier allows: {', '.join(sorted(tier.models))}", param="model")
        if model not in tier.models:
            allowing = self.tiers_allowing_model(model)
            forbidden(f"model {model!r} is not allowed for tier {tier.name!r}; "
                      + (f"tiers that allow it: {', '.join(allowing)}" if allowing else "no tier allows it"),
                      param="model")
        if restrict is not None and model not in restrict:
            forbidden(f"this key may not use model {model!r} (its models: {', '.join(sorted(restrict))})",
                      param="model")
        if needs is not None:
            lacking = missing(self.offers.get(model), needs)
            if lacking:
                bad_request(f"model {model!r} cannot serve this request: it needs {needs.describe(lacking)}; "
                            + self._who_can(tier, needs), param="model")
        allowed = tuple(g for g in self.custom_fallbacks.get(model, ())
                        if g in tier.models and (restrict is None or g in restrict) and g != model
                        and (needs is None or self.can_serve(g, needs)))
        chosen, fallbacks = self._first_available((model, *allowed), blocked, f"model {model!r}",
                                                  first_only=True)
        return Decision(CUSTOM, tier.name, model, chosen, fallbacks, CUSTOM)

    def _first_available(self, candidates: tuple[str, ...], blocked: BlockedFn, what: str,
                         first_only: bool = False) -> tuple[str, tuple[str, ...]]:
        chosen: str | None = None
        rest: list[str] = []
        waits: list[float] = []
        keyless: list[str] = []
        considered = 0
        for i, group in enumerate(candidates):
            wait = blocked(group)
            if wait is None:
                if chosen is None:
                    chosen = group
                else:
                    rest.append(group)
            else:
                considered += 1
                if wait == BYOK_ONLY:
                    keyless.append(group)
                elif isinstance(wait, (int, float)) and not isinstance(wait, bool):
                    waits.append(float(wait))
                if first_only and i == 0:
                    break  # a named model that cannot serve is a 503, not a silent model swap
        if chosen is None:
            byok = (f"{', '.join(keyless)}: not configured with a platform key on this proxy, served only "
                    "with your own provider key (POST /plugins/byok/keys)") if keyless else ""
            if keyless and len(keyless) == considered:
                # Waiting does not help: no Retry-After. The operator sets the keys, or the caller adds one.
                service_unavailable(f"no model for {what} can serve you: {byok}")
            retry = max(1, int(min(waits) + 0.999)) if waits else self.settings.retry_after_seconds
            service_unavailable(f"no healthy model for {what}: every candidate is unhealthy or cooling down"
                                + (f" ({byok})" if byok else "") + f"; retry in {retry}s", retry_after_s=retry)
        return chosen, tuple(rest)

    def key_restriction(self, key_models: Iterable[str] | None) -> frozenset[str] | None:
        """The model groups a key is limited to, or None (no list, ``*``, or only level names)."""
        if not key_models:
            return None
        names = frozenset(key_models)
        if names & UNRESTRICTED_KEY_MODELS:
            return None
        concrete = names & self.groups
        return concrete or None

    def cheaper_levels(self, level: str, tier: TierRule) -> list[str]:
        """Allowed levels cheaper than ``level``, next-cheaper first (mapping order = cost order)."""
        rank = self.level_rank[level]
        return [name for name in reversed(self.level_names[:rank]) if name in tier.levels]


def _router_fallbacks(config: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """``router_settings.fallbacks`` ([{group: [fallback, ...]}]) as a dict, for `custom` requests."""
    result: dict[str, tuple[str, ...]] = {}
    for entry in (config.get("router_settings") or {}).get("fallbacks") or []:
        if isinstance(entry, dict):
            for group, targets in entry.items():
                if isinstance(targets, list):
                    result[group] = tuple(t for t in targets if isinstance(t, str))
    return result
