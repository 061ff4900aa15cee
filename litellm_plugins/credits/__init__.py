"""credits capability; `credits_hook` is the instance listed in `litellm_settings.callbacks`.

Resolved lazily: `core.settings` imports `credits.settings`, which runs this file first, and an eager
hook import here would re-enter `core` half-initialised.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "credits_hook":
        from litellm_plugins.credits.hook import credits_hook

        return credits_hook
    raise AttributeError(name)
