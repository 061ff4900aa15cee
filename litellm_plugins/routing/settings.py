"""Settings of the routing capability (`litellm_plugins.routing` in proxy_config.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RoutingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
