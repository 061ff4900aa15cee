"""Which providers a user may bring a key for, and which provider a deployment attempt goes to.

Providers are exactly those of the deployments in ``model_list`` (LiteLLM's own
``get_llm_provider`` on each deployment's ``model`` / ``custom_llm_provider``), so a key can only
be stored for a provider the proxy can actually call. Results are memoised: the per-attempt hook
asks for every request and must stay at dictionary-lookup cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "os.environ/"

# Default base URLs for validation when a deployment names none (LiteLLM's defaults).
DEFAULT_API_BASES = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
}

_deployment_cache: dict[tuple[str, str | None], str | None] = {}


def _resolve(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return os.environ.get(value[len(ENV_PREFIX):]) or None
    return value


def provider_of(model: str | None, custom_llm_provider: str | None = None) -> str | None:
    """Provider of one deployment (``groq/llama…`` -> ``groq``); None when LiteLLM cannot tell."""
    if not model:
        return None
    cache_key = (model, custom_llm_provider)
    try:
        return _deployment_cache[cache_key]
    except KeyError:
        pass
    try:
        import litellm
        _, provider, _, _ = litellm.get_llm_provider(model=model, custom_llm_provider=custom_llm_provider)
    except Exception:  # noqa: BLE001 - unknown model shape: no provider, so no injection
        provider = custom_llm_provider or (model.split("/", 1)[0] if "/" in model else None)
    if len(_deployment_cache) < 10_000:
        _deployment_cache[cache_key] = provider
    return provider


@dataclass
class ProviderInfo:
    name: str
    api_base: str | None = None
    groups: set[str] = field(default_factory=set)


def configured_providers(config: dict[str, Any]) -> dict[str, ProviderInfo]:
    providers: dict[str, ProviderInfo] = {}
    for entry in config.get("model_list") or []:
        if not isinstance(entry, dict):
            continue
        params = entry.get("litellm_params") or {}
        provider = provider_of(params.get("model"), params.get("custom_llm_provider"))
        if provider is None:
            continue
        info = providers.setdefault(provider, ProviderInfo(provider))
        if entry.get("model_name"):
            info.groups.add(str(entry["model_name"]))
        api_base = _resolve(params.get("api_base"))
        if info.api_base is None and api_base and "mock_response" not in params:
            info.api_base = str(api_base).rstrip("/")
    for info in providers.values():
        if info.api_base is None:
            info.api_base = _default_api_base(info.name)
    return providers


def _default_api_base(provider: str) -> str | None:
    if provider in DEFAULT_API_BASES:
        return DEFAULT_API_BASES[provider]
    try:
        import litellm
        _, _, _, api_base = litellm.get_llm_provider(model=f"{provider}/x")
        return api_base.rstrip("/") if api_base else None
    except Exception:  # noqa: BLE001
        return None


def group_providers(config: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Model group -> providers of its deployments."""
    out: dict[str, set[str]] = {}
    for info in configured_providers(config).values():
        for group in info.groups:
            out.setdefault(group, set()).add(info.name)
    return {group: frozenset(names) for group, names in out.items()}
