"""routing capability; `routing_hook` is the instance listed in `litellm_settings.callbacks`.

Resolved lazily: `core.settings` imports `routing.settings`, which runs this file first, and an eager
hook import here would re-enter `core` half-initialised.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "routing_hook":
        from litellm_plugins.routing.hook import routing_hook

        return routing_hook
    raise AttributeError(name)
