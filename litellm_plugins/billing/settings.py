"""Settings of the billing capability (`litellm_plugins.billing` in proxy_config.yaml).

Several exporters may run at once, each with its own cursor in the outbox. Receiver credentials come
from the environment (``os.environ/NAME``, resolved only when billing is enabled) and are masked by
``/plugins/settings`` like every other ``*key*`` setting.
"""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from litellm_plugins.core.errors import SettingsError
from litellm_plugins.credits.settings import _decimal

KEY = "litellm_plugins.billing"

# What each receiver accepts at most per request, and the oldest event it takes (None: any).
MAX_BATCH = {"lago": 100, "openmeter": 1000, "stripe": 1, "webhook": 20}
MAX_AGE_DAYS = {"lago": None, "openmeter": None, "stripe": 35, "webhook": None}
DEFAULT_URL = {"lago": "https://api.getlago.com", "openmeter": "https://openmeter.cloud",
               "stripe": "https://api.stripe.com"}
WEBHOOK_EVENTS = ("low_balance", "credits_exhausted", "provider_down", "provider_up", "allowance_reset")


class ExporterSettings(BaseModel):
    """One receiver. ``name`` keys its cursor: renaming an exporter starts it from the beginning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["lago", "openmeter", "stripe", "webhook"]
    enabled: bool = True
    url: str | None = Field(default=None, description="Receiver base URL (default: the vendor's cloud API).")
    api_key: str = Field(min_length=1, description="Bearer token / secret key (webhook: the signing secret "
                                                   "whsec_<base64>); use os.environ/NAME.")
    # What the receiver calls the metered quantity (Lago billable metric code, OpenMeter event type,
    # Stripe meter event name) for charges; grants are sent only when grant_code is set.
    code: str = Field(default="llm_credits", min_length=1, max_length=200)
    grant_code: str | None = Field(default=None, min_length=1, max_length=200)
    batch_size: int | None = Field(default=None, ge=1, le=1000,
                                   description="Events per request (default and maximum: the receiver's).")
    max_event_age_days: float | None = Field(
        default=None, gt=0, le=3650,
        description="Older events go to the dead-letter list (default: the receiver's limit, Stripe 35).")
    source: str = Field(default="litellm-plugins", min_length=1, max_length=200,
                        description="OpenMeter CloudEvents `source`.")
    # ---- webhook only ----
    events: tuple[Literal["low_balance", "credits_exhausted", "provider_down", "provider_up",
                          "allowance_reset"], ...] = Field(
        default=WEBHOOK_EVENTS, description="Webhook event types sent to this URL.")
    low_balance_credits: Decimal = Field(default=Decimal(100), ge=0, le=Decimal(10) ** 12,
                                         description="low_balance fires when a charge takes an account's "
                                                     "balance below this.")

    _exact = field_validator("low_balance_credits", mode="before")(classmethod(lambda cls, v: _decimal(v)))

    @model_validator(mode="after")
    def _webhook(self) -> ExporterSettings:
        if self.type != "webhook" or self.api_key.startswith("os.environ/"):
            return self
        if self.url is None:
            raise ValueError("a webhook exporter needs its url")
        try:
            key = base64.b64decode(self.api_key.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not self.api_key.startswith("whsec_") or not key:
            raise ValueError("api_key of a webhook exporter: the signing secret, whsec_<base64>")
        return self

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        # an unresolved os.environ/ reference is left as is only while billing is disabled
        if value is not None and not value.startswith(("http://", "https://", "os.environ/")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @property
    def base_url(self) -> str:
        return self.url or DEFAULT_URL[self.type]

    @property
    def batch(self) -> int:
        return min(self.batch_size or MAX_BATCH[self.type], MAX_BATCH[self.type])

    @property
    def max_age_days(self) -> float | None:
        limit = MAX_AGE_DAYS[self.type]
        if self.max_event_age_days is None:
            return limit
        return self.max_event_age_days if limit is None else min(self.max_event_age_days, limit)


class BillingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    exporters: tuple[ExporterSettings, ...] = ()
    poll_interval_seconds: float = Field(default=1.0, ge=0.05, le=300,
                                         description="How often an idle exporter looks for new outbox rows.")
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    retry_initial_seconds: float = Field(default=0.5, gt=0, le=60)
    retry_max_seconds: float = Field(default=60.0, gt=0, le=3600,
                                     description="Backoff cap while a receiver or Postgres is down.")
    lease_ttl_seconds: float = Field(default=30.0, ge=1, le=600,
                                     description="Exporter lease in Redis: one sender per exporter across "
                                                 "workers and proxies; a dead one is replaced within this.")
    outbox_retention_days: float = Field(default=7.0, ge=0, le=3650,
                                         description="Outbox rows every enabled exporter acknowledged are "
                                                     "deleted this long after they were written.")
    prune_interval_seconds: float = Field(default=3600.0, ge=1, le=86400)
    usage_wait_seconds: float = Field(default=30.0, ge=0, le=3600,
                                      description="How long a charge waits for its usage row (tokens, model "
                                                  "group...) before it is exported without them.")

    def check_config(self, config: dict) -> None:
        names = [e.name for e in self.exporters]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise SettingsError(f"{KEY}.exporters[{i}].name: exporter {name!r} is named twice")
        credits = ((config.get("litellm_plugins") or {}).get("credits") or {})
        if credits.get("enabled") is not True:
            raise SettingsError(f"{KEY}.enabled: billing exports the credits ledger: enable "
                                "litellm_plugins.credits too")
        if self.lease_ttl_seconds <= self.request_timeout_seconds:
            raise SettingsError(f"{KEY}.lease_ttl_seconds: must be longer than request_timeout_seconds "
                                f"({self.lease_ttl_seconds} <= {self.request_timeout_seconds}), or a slow "
                                "receiver would let two senders run at once")
