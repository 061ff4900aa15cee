"""credits capability; `credits_hook` is the instance listed in `litellm_settings.callbacks`."""

from litellm_plugins.credits.hook import credits_hook

__all__ = ["credits_hook"]
