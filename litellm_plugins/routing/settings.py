"""Settings of the routing capability (`litellm_plugins.routing` in proxy_config.yaml).

Pydantic checks the shapes; ``check_config`` checks everything that needs the whole proxy config or
cross-references (every model group exists in ``model_list``, every tier/level named is defined), so
a typo in the policy stops the proxy at startup with the exact key instead of surfacing as a 403 or
a provider error on some user's request.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from litellm_plugins.core.errors import SettingsError

KEY = "litellm_plugins.routing"
# Names with a meaning of their own in a request's `model` field; no level or model group may use them.
AUTO = "auto"
CUSTOM = "custom"
RESERVED = frozenset({AUTO, CUSTOM})
ANY_MODEL = "*"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class TierPolicy(BaseModel):
    """What one subscription tier may use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: list[str] = Field(default_factory=list,
                              description="Power levels this tier may use (each is a key of `levels`).")
    default_level: str | None = Field(default=None,
                                      description="Level for `model: auto` when nothing else chose one.")
    models: list[str] = Field(default_factory=list,
                              description="Model groups this tier may name directly (`custom`), in addition "
                                          "to every candidate of its levels; \"*\" = every model group.")


class RoutingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    levels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Power level -> ordered candidate model groups (first healthy allowed one serves, "
                    "the other allowed ones are its fallbacks). Mapping order = cheapest level first.")
    tiers: dict[str, TierPolicy] = Field(default_factory=dict, description="Tier name -> policy.")
    default_tier: str = Field(default="free", description="Tier of a caller whose key/team metadata has none.")
    default_level: str = Field(default="eco", description="Level when neither request, key, team nor tier says.")
    admin_tier: str | None = Field(
        default="enterprise",
        description="Tier of a proxy admin (master key) with no tier metadata; null = default_tier.")
    degrade_when_low_credits: bool = Field(
        default=False,
        description="Route to a cheaper allowed level when the caller cannot afford the requested one.")
    retry_after_seconds: int = Field(default=30, ge=1, le=3600,
                                     description="Retry-After of a 503 when no cooldown end is known.")
    capability_check: bool = Field(
        default=True,
        description="Only route a request to candidates that can serve it (images, audio, tools, "
                    "json_schema, reasoning, context window).")
    escalate_for_capability: bool = Field(
        default=False,
        description="When no candidate of the level can serve the request, use the next more expensive "
                    "level the tier allows (else 400 naming the missing capability).")
    account_defaults_refresh_s: float = Field(
        default=5.0, ge=0.1, le=3600,
        description="How often each worker checks for accounts' saved default levels changed through "
                    "another worker (one tiny query; the request path reads memory only).")
    chars_per_token: float = Field(default=3.0, gt=0, le=16,
                                   description="Prompt token estimate = characters / this (no tokenizer).")

    def check_config(self, config: dict) -> None:
        """Cross-check the policy against ``model_list``; the message names the offending key."""
        groups = {m.get("model_name") for m in config.get("model_list") or [] if isinstance(m, dict)}
        if not self.levels:
            raise SettingsError(f"{KEY}.levels: at least one power level is required when routing is enabled")
        for level, candidates in self.levels.items():
            if not _NAME.match(level) or level in RESERVED:
                raise SettingsError(f"{KEY}.levels.{level}: a level name must be lower-case letters, digits, "
                                    f"'-' or '_' and not one of {sorted(RESERVED)}")
            if level in groups:
                raise SettingsError(f"{KEY}.levels.{level}: a model group in model_list has the same name; "
                                    "requests naming it would be ambiguous")
            if not candidates:
                raise SettingsError(f"{KEY}.levels.{level}: lists no model group")
            seen: set[str] = set()
            for i, group in enumerate(candidates):
                if group not in groups:
                    raise SettingsError(f"{KEY}.levels.{level}[{i}]: model group {group!r} is not in model_list")
                if group in seen:
                    raise SettingsError(f"{KEY}.levels.{level}[{i}]: model group {group!r} is listed twice")
                seen.add(group)
        if not self.tiers:
            raise SettingsError(f"{KEY}.tiers: at least one tier is required when routing is enabled")
        for tier, policy in self.tiers.items():
            for i, level in enumerate(policy.levels):
                if level not in self.levels:
                    raise SettingsError(f"{KEY}.tiers.{tier}.levels[{i}]: unknown power level {level!r} "
                                        f"(known: {', '.join(self.levels)})")
            if policy.default_level is not None and policy.default_level not in policy.levels:
                raise SettingsError(f"{KEY}.tiers.{tier}.default_level: {policy.default_level!r} is not one of "
                                    f"this tier's levels ({', '.join(policy.levels) or 'none'})")
            for i, group in enumerate(policy.models):
                if group != ANY_MODEL and group not in groups:
                    raise SettingsError(f"{KEY}.tiers.{tier}.models[{i}]: model group {group!r} is not in model_list")
        if self.default_tier not in self.tiers:
            raise SettingsError(f"{KEY}.default_tier: unknown tier {self.default_tier!r} "
                                f"(known: {', '.join(self.tiers)})")
        if self.default_level not in self.levels:
            raise SettingsError(f"{KEY}.default_level: unknown power level {self.default_level!r} "
                                f"(known: {', '.join(self.levels)})")
        if self.admin_tier is not None and self.admin_tier not in self.tiers:
            raise SettingsError(f"{KEY}.admin_tier: unknown tier {self.admin_tier!r} "
                                f"(known: {', '.join(self.tiers)})")
