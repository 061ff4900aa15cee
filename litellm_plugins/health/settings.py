"""Settings of the health capability (`litellm_plugins.health` in proxy_config.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class HealthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
