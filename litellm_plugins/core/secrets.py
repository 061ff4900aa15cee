"""Masking for anything secret that might reach an API response, a log line or an error."""

from __future__ import annotations

from typing import Any

SECRET_WORDS = ("key", "secret", "password", "token", "url", "dsn")


def mask(value: str, keep: int = 4) -> str:
    """``sk-abcdef123456`` -> ``****3456``; short values are fully masked."""
    if len(value) <= keep * 2:
        return "*" * len(value)
    return "****" + value[-keep:]


def mask_tree(value: Any, name: str = "") -> Any:
    """Mask every string under a key whose name suggests a secret (URLs can carry passwords)."""
    if isinstance(value, dict):
        return {k: mask_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_tree(v, name) for v in value]
    if isinstance(value, str) and any(word in name.lower() for word in SECRET_WORDS):
        return mask(value)
    return value
