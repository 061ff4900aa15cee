"""LiteLLM hooks of the routing capability (not implemented yet: registered so the config is stable)."""

from __future__ import annotations

from litellm.integrations.custom_logger import CustomLogger


class RoutingHook(CustomLogger):
    """Hook methods must be defined on this class itself: LiteLLM skips inherited overrides."""


routing_hook = RoutingHook()
