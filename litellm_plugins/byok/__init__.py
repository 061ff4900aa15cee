"""byok capability; `byok_hook` is the instance listed in `litellm_settings.callbacks`.

Resolved lazily: `core.settings` imports `byok.settings`, which runs this file first, and an eager
hook import here would re-enter `core` half-initialised.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "byok_hook":
        from litellm_plugins.byok.hook import byok_hook

        return byok_hook
    raise AttributeError(name)
