"""routing capability; `routing_hook` is the instance listed in `litellm_settings.callbacks`."""

from litellm_plugins.routing.hook import routing_hook

__all__ = ["routing_hook"]
