"""Settings of the credits capability (`litellm_plugins.credits` in proxy_config.yaml).

Money settings are ``Decimal`` (YAML numbers are read through ``str`` first, so ``0.1`` stays 0.1):
a float here would make every charge inexact.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from litellm_plugins.core.errors import SettingsError



def _decimal(value: object) -> object:
    if isinstance(value, float):
        return Decimal(str(value))
    return value


class AllowanceSettings(BaseModel):
    """A tier's allowance: ``amount`` credits (or ``unlimited``) per calendar ``period`` (docs/credits.md,
    "Allowances and buckets"). 0 is valid: the tier gets nothing, and its period is still tracked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Decimal | Literal["unlimited"]
    period: Literal["day", "week", "month"]

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: object) -> object:
        return _decimal(value)

    @field_validator("amount")
    @classmethod
    def _range(cls, value: Decimal | str) -> Decimal | str:
        if isinstance(value, Decimal) and (not value.is_finite() or value < 0 or value > Decimal(10) ** 12):
            raise ValueError(f"must be between 0 and 10^12 credits or 'unlimited', got {value}")
        if isinstance(value, Decimal) and (value * 10 ** 6) % 1:
            raise ValueError("has more than 6 decimal places (1 unit = 0.000001 credit)")
        return value


class CapSettings(BaseModel):
    """Most credits a tier's account may spend per calendar day / week / month (charges + open holds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    day: Decimal | None = Field(default=None, ge=0, le=Decimal(10) ** 12)
    week: Decimal | None = Field(default=None, ge=0, le=Decimal(10) ** 12)
    month: Decimal | None = Field(default=None, ge=0, le=Decimal(10) ** 12)

    _exact = field_validator("day", "week", "month", mode="before")(classmethod(lambda cls, v: _decimal(v)))

    @field_validator("day", "week", "month")
    @classmethod
    def _units(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and (value * 10 ** 6) % 1:
            raise ValueError("has more than 6 decimal places (1 unit = 0.000001 credit)")
        return value


class CreditsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    starting_grant: Decimal = Field(default=Decimal(1000), ge=0, le=Decimal(10) ** 12,
                                    description="Credits a new account receives once.")
    credits_per_usd: Decimal = Field(default=Decimal(100), gt=0, le=Decimal(10) ** 9,
                                     description="Credits charged per USD of LiteLLM response_cost.")
    tier_markup: dict[str, Decimal] = Field(default_factory=dict,
                                            description="Tier -> multiplier of the charge (missing tier: 1).")
    default_tier: str = "free"
    hold_ttl_seconds: int = Field(default=900, ge=30, le=7 * 86400,
                                  description="A hold older than this is voided by the reconciler.")
    reconcile_interval_seconds: float = Field(default=30.0, ge=0.5, le=3600)
    default_max_output_tokens: int = Field(default=4096, ge=1, le=10_000_000,
                                           description="Worst-case output when neither the request nor the model says.")
    prompt_bytes_per_token: float = Field(default=3.0, gt=0, le=16,
                                          description="Prompt token estimate = UTF-8 bytes / this (+ overhead).")
    max_grant: Decimal = Field(default=Decimal(10) ** 9, gt=0, description="Largest single grant (credits).")
    spool_dir: str = Field(default="/tmp/litellm-plugins-spool",
                           description="Durable spool for writes made while Postgres is down.")
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    writer_batch_size: int = Field(default=500, ge=1, le=10_000)
    # Why 1 s and what it costs: docs/credits.md, "Writer".
    writer_interval_seconds: float = Field(default=1.0, gt=0, le=10)
    # Leases (docs/credits.md, "Leases"): holds placed without waiting for Redis while plenty is left.
    lease_requests: int = Field(default=8, ge=0, le=1000,
                                description="A lease sets aside this many worst cases of the request "
                                            "that takes it; 0 turns leases off.")
    lease_seconds: float = Field(default=5.0, ge=0.5, le=60,
                                 description="A worker carves holds from a lease for at most this long; a lease "
                                             "unused for a fifth of this is given back.")
    lease_headroom: int = Field(default=10, ge=1, le=10_000,
                                description="A lease is granted only if the account keeps this many times "
                                            "its size free afterwards.")
    # README "Endpoints", docs/credits.md "Other endpoints".
    other_endpoints: Literal["refuse", "pass"] = Field(
        default="refuse", description="refuse = a 400 for calls on routes whose charge is not verified (images, "
                                      "audio, rerank, batches, ...); pass = hold per token and settle LiteLLM's "
                                      "response_cost as on the verified routes.")
    # docs/credits.md, "Allowances and buckets" / "Spend caps".
    timezone: str = Field(default="UTC", description="Time zone of the calendar periods of allowances, caps and "
                                                      "spend counters (IANA name, e.g. Europe/Paris).")
    allowances: dict[str, AllowanceSettings] = Field(
        default_factory=dict, description="Tier -> allowance refilled each period (amount + day/week/month).")
    caps: dict[str, CapSettings] = Field(default_factory=dict,
                                         description="Tier -> most credits spent per day / week / month.")
    # docs/credits.md, "Redis down".
    on_redis_error: Literal["postgres", "reject", "allow"] = Field(
        default="postgres", description="postgres = place holds in Postgres while Redis is unreachable; "
                                        "reject = 503 when Redis cannot place the hold; allow = serve unheld.")

    _normalise = field_validator("starting_grant", "credits_per_usd", "max_grant", mode="before")(
        classmethod(lambda cls, v: _decimal(v)))

    @field_validator("tier_markup", mode="before")
    @classmethod
    def _markups(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: _decimal(v) for k, v in value.items()}
        return value

    @field_validator("tier_markup")
    @classmethod
    def _positive(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for tier, markup in value.items():
            if not markup.is_finite() or markup < 0 or markup > 1000:
                raise ValueError(f"markup of tier {tier!r} must be between 0 and 1000, got {markup}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Paris)") from None
        return value

    def markup(self, tier: str | None) -> Decimal:
        return self.tier_markup.get(tier or self.default_tier, Decimal(1))

    def check_config(self, config: dict) -> None:
        groups = {m.get("model_name") for m in config.get("model_list") or []}
        if not groups:
            raise SettingsError("litellm_plugins.credits.enabled: model_list is empty, nothing can be priced")
