"""health capability; `health_hook` is the instance listed in `litellm_settings.callbacks`.

Resolved lazily: `core.settings` imports `health.settings`, which runs this file first, and an eager
hook import here would re-enter `core` half-initialised.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "health_hook":
        from litellm_plugins.health.hook import health_hook

        return health_hook
    raise AttributeError(name)
