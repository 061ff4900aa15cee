"""LiteLLM hooks of the health capability (not implemented yet: registered so the config is stable)."""

from __future__ import annotations

from litellm.integrations.custom_logger import CustomLogger


class HealthHook(CustomLogger):
    """Hook methods must be defined on this class itself: LiteLLM skips inherited overrides."""


health_hook = HealthHook()
