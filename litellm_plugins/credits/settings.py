"""Settings of the credits capability (`litellm_plugins.credits` in proxy_config.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CreditsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
