"""The deployments health watches, read from the proxy's live LiteLLM router.

Ids are LiteLLM's own ``model_info.id`` (a hash of the deployment's params unless set in the config),
identical on every worker and instance running the same config, so a circuit keyed by it in Redis
means the same deployment everywhere. The probe target of a deployment (URL + auth header) is derived
here; keys stay in this process (never in Redis, Postgres, logs or API output).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "os.environ/"

# Public OpenAI-compatible API bases of providers LiteLLM knows, for deployments without api_base.
DEFAULT_API_BASES: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together_ai": "https://api.together.xyz/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "openrouter": "https://openrouter.ai/api/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "mistral": "https://api.mistral.ai/v1",
    "anthropic": "https://api.anthropic.com",
    # LiteLLM's HuggingFace chat handler calls its OpenAI-compatible router (``/v1/chat/completions``),
    # which also answers ``GET /v1/models``.
    "huggingface": "https://router.huggingface.co/v1",
    # LiteLLM's default for an Ollama deployment without api_base.
    "ollama": "http://localhost:11434",
    "ollama_chat": "http://localhost:11434",
}


def _resolve(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return os.environ.get(value[len(ENV_PREFIX):]) or None
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Deployment:
    model_id: str
    model_group: str
    model: str          # upstream model string, e.g. groq/llama-3.1-8b-instant
    provider: str
    api_base: str | None
    probe_url: str | None
    probe_headers: tuple[tuple[str, str], ...]  # contains the platform key: never log or return
    missing: tuple[str, ...] = ()  # unset os.environ/ settings (core.catalog): BYOK-only, never probed
    mocked: bool = False           # mock_response: answers inside the proxy
    byok_servable: bool = True     # only its api_key is missing: a caller's own key serves it

    @property
    def byok_only(self) -> bool:
        """No platform config (either kind below): never probed, never routed to for platform traffic."""
        return bool(self.missing)

    @property
    def platform_status(self) -> str | None:
        """``byok_only`` (key unset), ``unconfigured`` (e.g. api_base unset), or None."""
        if not self.missing:
            return None
        return "byok_only" if self.byok_servable else "unconfigured"

    def not_probed_reason(self, excluded: frozenset[str] | set[str] | tuple[str, ...]) -> str | None:
        """Why the prober skips this deployment (None: it is probed), for the API to say so."""
        if self.missing:
            return (f"{self.platform_status}: {', '.join(self.missing)} unset "
                    "(never probed with a missing platform setting)")
        if self.model_group in excluded:
            return "listed in probe_exclude_model_groups"
        if self.mocked:
            return "answers locally (mock_response): nothing to probe"
        if self.probe_url is None:
            return "no api_base to probe"
        return None

    @property
    def endpoint(self) -> str | None:
        """``scheme://host[:port]`` only: safe to show (no path tokens, no credentials)."""
        if not self.api_base:
            return None
        parts = urlsplit(self.api_base)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")

    def public(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "model_group": self.model_group, "model": self.model,
                "provider": self.provider}


def _probe(provider: str, api_base: str | None, key: str | None) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    if not api_base:
        return None, ()
    base = api_base.rstrip("/")
    if provider == "anthropic":
        url = base + ("/models" if base.endswith("/v1") else "/v1/models")
        headers = (("x-api-key", key),) if key else ()
        return url, headers + (("anthropic-version", "2023-06-01"),)
    if provider in ("ollama", "ollama_chat"):
        return base + "/api/tags", ()
    return base + "/models", (("authorization", f"Bearer {key}"),) if key else ()


def from_entry(entry: dict[str, Any], missing: tuple[str, ...] = (),
               byok_servable: bool = True) -> Deployment | None:
    """``entry``: one deployment of LiteLLM's router (values already resolved); ``missing``: its
    unset ``os.environ/`` settings, from ``core.catalog``."""
    info = entry.get("model_info") or {}
    params = entry.get("litellm_params") or {}
    model_id = info.get("id")
    if not model_id:
        return None
    model = str(params.get("model") or "")
    provider = params.get("custom_llm_provider") or (model.split("/", 1)[0] if "/" in model else "openai")
    mocked = params.get("mock_response") is not None
    api_base = None if mocked else (_resolve(params.get("api_base")) or DEFAULT_API_BASES.get(provider))
    url, headers = _probe(provider, api_base, _resolve(params.get("api_key")))
    if missing:
        url, headers = None, ()  # a probe without the platform's key or endpoint proves nothing
    return Deployment(str(model_id), str(entry.get("model_name") or ""), model, str(provider), api_base,
                      url, headers, tuple(missing), mocked, byok_servable)


def from_router(router: Any, config: dict[str, Any] | None) -> list[Deployment]:
    """Every deployment of ``router``, with what ``config`` (raw) says is missing."""
    from litellm_plugins.core.catalog import Catalog
    cat = Catalog(router, config)
    return _with_catalog(router, cat)


def _with_catalog(router: Any, cat: Any) -> list[Deployment]:
    out = []
    for entry in router.model_list or []:
        model_id = (entry.get("model_info") or {}).get("id")
        known = cat.entries.get(str(model_id)) if cat is not None and model_id is not None else None
        deployment = (from_entry(entry, known.missing, known.byok_servable) if known is not None
                      else from_entry(entry))
        if deployment is not None:
            out.append(deployment)
    return out


def current() -> list[Deployment]:
    """Deployments of this worker's LiteLLM router (empty until the proxy has loaded its config)."""
    try:
        from litellm.proxy import proxy_server
    except ImportError:  # pragma: no cover - the proxy extra is a dependency
        return []
    router = getattr(proxy_server, "llm_router", None)
    if router is None:
        return []
    from litellm_plugins.core import catalog
    return _with_catalog(router, catalog.snapshot())
