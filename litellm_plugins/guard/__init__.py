"""guard capability (request check); `guard_hook` (in `litellm_settings.callbacks`) is resolved lazily, see core.lazy."""

from litellm_plugins.core.lazy import hook_getattr

__getattr__ = hook_getattr(__name__)
