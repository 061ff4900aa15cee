"""byok capability; `byok_hook` is the instance listed in `litellm_settings.callbacks`."""

from litellm_plugins.byok.hook import byok_hook

__all__ = ["byok_hook"]
