"""health capability; `health_hook` is the instance listed in `litellm_settings.callbacks`."""

from litellm_plugins.health.hook import health_hook

__all__ = ["health_hook"]
