"""Lazy hook export for capability packages.

``litellm_settings.callbacks`` names ``litellm_plugins.<cap>.<cap>_hook``; LiteLLM imports the package
and reads the attribute. ``core.settings`` also imports ``<cap>.settings``, which runs the package's
``__init__`` first — an eager hook import there would re-enter ``core`` half-initialised. So each
package resolves its hook on first attribute access instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def hook_getattr(package: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` exposing ``<cap>_hook`` from ``<package>.hook`` on first use."""
    hook_name = package.rsplit(".", 1)[1] + "_hook"

    def __getattr__(name: str) -> Any:
        if name == hook_name:
            return getattr(importlib.import_module(f"{package}.hook"), hook_name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
