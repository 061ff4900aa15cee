"""LiteLLM hooks of the credits capability (not implemented yet: registered so the config is stable)."""

from __future__ import annotations

from litellm.integrations.custom_logger import CustomLogger


class CreditsHook(CustomLogger):
    """Hook methods must be defined on this class itself: LiteLLM skips inherited overrides."""


credits_hook = CreditsHook()
