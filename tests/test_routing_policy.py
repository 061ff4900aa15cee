"""Unit tests of the routing policy: settings checks, precedence, tier rules, availability.

(Plus one real proxy start: a bad policy must stop the proxy with a message naming the key.)

Uses the shipped proxy_config.yaml policy and a real ``litellm.Router`` (its own cooldown cache and
the health capability's real ``view.publish``); no proxy process, so these run in well under a second.
"""

from __future__ import annotations

import copy
from typing import Any

import litellm
import pytest
import yaml
from litellm.proxy._types import ProxyException

from litellm_plugins.routing import availability
from litellm_plugins.routing.policy import Policy
from litellm_plugins.routing.settings import RoutingSettings, SettingsError
from tests.support.proxy import PROXY_CONFIG


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(PROXY_CONFIG.read_text())


@pytest.fixture(scope="module")
def settings(config: dict[str, Any]) -> RoutingSettings:
    return RoutingSettings.model_validate(config["litellm_plugins"]["routing"])


@pytest.fixture(scope="module")
def policy(settings: RoutingSettings, config: dict[str, Any]) -> Policy:
    return Policy(settings, config)


def never_blocked(group: str) -> None:
    return None


def blocked_set(groups: set[str], wait: float | None = None):
    def blocked(group: str):
        return (wait if wait is not None else True) if group in groups else None
    return blocked


def raises(fn, status: int) -> ProxyException:
    with pytest.raises(ProxyException) as info:
        fn()
    assert str(info.value.code) == str(status), info.value.message
    return info.value


# ---- settings -----------------------------------------------------------------------------------

def test_shipped_catalog_and_policy_pass_check_config(settings: RoutingSettings, config: dict) -> None:
    settings.check_config(config)
    assert settings.enabled
    assert len(config["model_list"]) >= 45
    assert config["model_list"][0]["model_name"] == "demo"
    providers = {m["litellm_params"]["model"].split("/", 1)[0] for m in config["model_list"]}
    assert {"groq", "hosted_vllm", "ollama_chat", "together_ai", "deepinfra", "openrouter", "fireworks_ai",
            "openai", "anthropic", "huggingface"} <= providers
    for entry in config["model_list"][1:]:
        params = entry["litellm_params"]
        assert "input_cost_per_token" in params and "output_cost_per_token" in params, entry["model_name"]
        assert str(params.get("api_key", "os.environ/")).startswith("os.environ/"), entry["model_name"]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["levels"]["eco"].insert(1, "no-such-model"),
     "litellm_plugins.routing.levels.eco[1]: model group 'no-such-model' is not in model_list"),
    (lambda r: r["tiers"]["free"]["levels"].append("turbo"),
     "litellm_plugins.routing.tiers.free.levels[1]: unknown power level 'turbo'"),
    (lambda r: r["tiers"]["free"].update(default_level="precision"),
     "litellm_plugins.routing.tiers.free.default_level: 'precision' is not one of this tier's levels"),
    (lambda r: r["tiers"]["starter"]["models"].insert(0, "gpt-9"),
     "litellm_plugins.routing.tiers.starter.models[0]: model group 'gpt-9' is not in model_list"),
    (lambda r: r.update(default_tier="gold"), "litellm_plugins.routing.default_tier: unknown tier 'gold'"),
    (lambda r: r.update(default_level="turbo"), "litellm_plugins.routing.default_level: unknown power level"),
    (lambda r: r.update(admin_tier="root"), "litellm_plugins.routing.admin_tier: unknown tier 'root'"),
    (lambda r: r["levels"].update(auto=["demo"]), "litellm_plugins.routing.levels.auto: a level name"),
    (lambda r: r["levels"].update(demo=["gpt-4o"]), "litellm_plugins.routing.levels.demo: a model group"),
    (lambda r: r["levels"].update(eco=[]), "litellm_plugins.routing.levels.eco: lists no model group"),
])
def test_check_config_names_the_bad_key(config: dict, mutate, message: str) -> None:
    raw = copy.deepcopy(config["litellm_plugins"]["routing"])
    mutate(raw)
    with pytest.raises(SettingsError) as info:
        RoutingSettings.model_validate(raw).check_config(config)
    assert str(info.value).startswith(message), str(info.value)


def test_unknown_setting_is_refused_by_core_parser() -> None:
    from litellm_plugins.core.settings import parse_settings
    with pytest.raises(SettingsError, match=r"litellm_plugins\.routing\.levelz: unknown setting"):
        parse_settings({"database_url": "x", "redis_url": "y", "routing": {"levelz": {}}})


def test_bad_policy_stops_the_proxy_naming_the_key(start_proxy) -> None:
    others_off = {name: {"enabled": False} for name in ("credits", "byok", "health")}
    proxy = start_proxy(plugins={**others_off, "routing": {"levels": {"eco": ["demo", "no-such-model"]}}},
                        name="badpolicy", wait=False)
    assert proxy.wait_exit(timeout=90) != 0
    assert ("litellm_plugins.routing.levels.eco[1]: model group 'no-such-model' is not in model_list"
            in proxy.log_text())


# ---- tier and level precedence -------------------------------------------------------------------

def test_tier_precedence(policy: Policy) -> None:
    assert policy.tier_of({"tier": "starter"}, {"tier": "enterprise"}, False).name == "starter"
    assert policy.tier_of({}, {"tier": "enterprise"}, False).name == "enterprise"
    assert policy.tier_of({}, {}, False).name == "free"
    assert policy.tier_of({}, {}, True).name == "enterprise"  # admin_tier
    assert policy.tier_of({"tier": "free"}, {}, True).name == "free"  # explicit metadata wins for admins too
    err = raises(lambda: policy.tier_of({"tier": "gold"}, {}, False), 403)
    assert "'gold'" in err.message and "free, starter, professional, enterprise" in err.message


def test_level_precedence(policy: Policy) -> None:
    pro = policy.tiers["professional"]
    key, team = {"power_level": "balanced"}, {"power_level": "precision"}
    assert policy.level_of("eco", "precision", "precision", key, team, pro) == ("eco", "model")
    assert policy.level_of("auto", "precision", "balanced", key, team, pro) == ("precision", "header")
    assert policy.level_of("auto", None, "precision", key, team, pro) == ("precision", "body")
    assert policy.level_of("auto", None, None, key, team, pro) == ("balanced", "key")
    assert policy.level_of("auto", None, None, {}, team, pro) == ("precision", "team")
    assert policy.level_of("auto", None, None, {}, {}, pro) == ("balanced", "tier")
    assert policy.level_of("gpt-4o", "precision", None, key, team, pro) == ("custom", "custom")
    assert policy.level_of("auto", " Precision ", None, {}, {}, pro) == ("precision", "header")


def test_config_default_level_when_tier_has_none(settings: RoutingSettings, config: dict) -> None:
    raw = copy.deepcopy(config["litellm_plugins"]["routing"])
    raw["tiers"]["enterprise"].pop("default_level")
    raw["default_level"] = "precision"
    policy = Policy(RoutingSettings.model_validate(raw), config)
    assert policy.level_of("auto", None, None, {}, {}, policy.tiers["enterprise"]) == ("precision", "default")


def test_unknown_level_is_400_listing_valid_ones(policy: Policy) -> None:
    pro = policy.tiers["professional"]
    err = raises(lambda: policy.level_of("auto", "turbo", None, {}, {}, pro), 400)
    assert "unknown power level 'turbo'" in err.message and "eco, balanced, precision" in err.message
    assert err.param == "power_level"
    raises(lambda: policy.level_of("auto", None, "turbo", {}, {}, pro), 400)
    raises(lambda: policy.level_of("auto", None, None, {"power_level": "x"}, {}, pro), 400)


# ---- decisions -------------------------------------------------------------------------------------

def decide(policy: Policy, model: str, tier: str = "enterprise", level: str | None = None,
           key_models: list[str] | None = None, blocked=never_blocked):
    rule = policy.tiers[tier]
    if level is None:
        level, source = policy.level_of(model, None, None, {}, {}, rule)
    else:
        source = "header"
    return policy.decide(model=model, tier=rule, level=level, level_source=source,
                         key_models=key_models, blocked=blocked)


def test_each_level_takes_its_first_candidate_and_the_rest_are_fallbacks(policy: Policy) -> None:
    for level, candidates in policy.levels.items():
        d = decide(policy, level)
        assert (d.model_group, d.fallbacks, d.level) == (candidates[0], candidates[1:], level)


def test_tier_refusals_name_the_tiers_that_allow(policy: Policy) -> None:
    err = raises(lambda: decide(policy, "precision", tier="free"), 403)
    assert err.message == ("power level 'precision' is not allowed for tier 'free'; "
                           "tiers that allow it: professional, enterprise")
    err = raises(lambda: decide(policy, "claude-opus-4", tier="professional"), 403)
    assert "model 'claude-opus-4' is not allowed for tier 'professional'" in err.message
    assert "tiers that allow it: enterprise" in err.message
    # a free caller may name a model of its own levels and its tier's models
    assert decide(policy, "groq-llama-3.1-8b", tier="free").model_group == "groq-llama-3.1-8b"
    assert decide(policy, "local-qwen-32b", tier="free").model_group == "local-qwen-32b"
    # unknown names are a 400 for restricted tiers, passed to LiteLLM for "*" tiers
    err = raises(lambda: decide(policy, "gpt-9", tier="free"), 400)
    assert "unknown model 'gpt-9'" in err.message
    assert decide(policy, "gpt-9", tier="enterprise").model_group == "gpt-9"


def test_unhealthy_candidates_are_skipped_and_not_fallbacks(policy: Policy) -> None:
    eco = policy.levels["eco"]
    d = decide(policy, "eco", blocked=blocked_set({eco[0], eco[2]}))
    assert d.model_group == eco[1]
    assert d.fallbacks == eco[3:]


def test_all_blocked_is_503_with_retry_after(policy: Policy) -> None:
    err = raises(lambda: decide(policy, "eco", blocked=blocked_set(set(policy.levels["eco"]), wait=12.2)), 503)
    assert err.headers == {"Retry-After": "13"}
    assert "no healthy model for power level 'eco'" in err.message
    err = raises(lambda: decide(policy, "eco", blocked=blocked_set(set(policy.levels["eco"]))), 503)
    assert err.headers == {"Retry-After": "30"}  # retry_after_seconds when no cooldown end is known
    err = raises(lambda: decide(policy, "gpt-4o", blocked=blocked_set({"gpt-4o"})), 503)
    assert "model 'gpt-4o'" in err.message


def test_key_models_restrict_the_routed_target(policy: Policy) -> None:
    eco = policy.levels["eco"]
    d = decide(policy, "eco", key_models=["eco", eco[2], eco[-1]])
    assert (d.model_group, d.fallbacks) == (eco[2], (eco[-1],))
    err = raises(lambda: decide(policy, "eco", key_models=["eco", "gpt-4o"]), 403)
    assert "this key may not use any model of power level 'eco'" in err.message
    err = raises(lambda: decide(policy, "gpt-4.1", key_models=["gpt-4o"]), 403)
    assert "this key may not use model 'gpt-4.1'" in err.message
    # levels-only or unrestricted lists do not restrict targets
    assert decide(policy, "eco", key_models=["eco"]).model_group == eco[0]
    assert decide(policy, "eco", key_models=["all-proxy-models"]).model_group == eco[0]


def test_custom_fallbacks_come_from_router_settings_filtered_by_tier(settings, config) -> None:
    cfg = copy.deepcopy(config)
    cfg.setdefault("router_settings", {})["fallbacks"] = [
        {"local-qwen-32b": ["gpt-4o", "local-mistral-7b"]}]
    policy = Policy(settings, cfg)
    d = decide(policy, "local-qwen-32b", tier="free")
    assert d.fallbacks == ("local-mistral-7b",)


def test_cheaper_levels(policy: Policy) -> None:
    assert policy.cheaper_levels("precision", policy.tiers["enterprise"]) == ["balanced", "eco"]
    assert policy.cheaper_levels("balanced", policy.tiers["starter"]) == ["eco"]
    assert policy.cheaper_levels("eco", policy.tiers["starter"]) == []


# ---- availability against a real LiteLLM router ------------------------------------------------

def test_availability_reads_router_cooldowns_and_health_view(monkeypatch) -> None:
    from litellm_plugins.health import view
    router = litellm.Router(model_list=[
        {"model_name": "a", "litellm_params": {"model": "openai/a", "api_key": "x"}, "model_info": {"id": "a1"}},
        {"model_name": "a", "litellm_params": {"model": "openai/a2", "api_key": "x"}, "model_info": {"id": "a2"}},
        {"model_name": "b", "litellm_params": {"model": "openai/b", "api_key": "x"}, "model_info": {"id": "b1"}},
    ])
    snap = availability.Availability(router)
    now = availability.now()
    assert snap.blocked("a", frozenset(), now) is None
    router.cooldown_cache.add_deployment_to_cooldown("a1", Exception("boom"), 500, cooldown_time=20)
    assert snap.blocked("a", frozenset(), availability.now()) is None  # a2 still serves
    router.cooldown_cache.add_deployment_to_cooldown("a2", Exception("boom"), 500, cooldown_time=10)
    hit = snap.blocked("a", frozenset(), availability.now())
    assert hit is not None and 9 < hit.retry_after <= 10
    # health's view: b1 unhealthy -> b blocked with unknown retry time
    try:
        view.publish(frozenset({"b1"}))
        assert availability.unhealthy_ids() == frozenset({"b1"})
        hit = snap.blocked("b", availability.unhealthy_ids(), availability.now())
        assert hit is not None and hit.retry_after is None
    finally:
        view.publish(frozenset())
    assert snap.blocked("b", availability.unhealthy_ids(), availability.now()) is None
    assert snap.group_of == {"a1": "a", "a2": "a", "b1": "b"}
    # an expired cooldown no longer blocks
    assert snap.blocked("a", frozenset(), availability.now() + 60) is None
