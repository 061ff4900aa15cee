"""Settings of the byok capability (`litellm_plugins.byok` in proxy_config.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ByokSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
