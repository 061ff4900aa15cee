"""The installed LiteLLM release as a comparable tuple (tests whose expectation differs by release)."""

from __future__ import annotations

from importlib.metadata import version


def installed_litellm() -> tuple[int, ...]:
    parts = []
    for piece in version("litellm").split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)
