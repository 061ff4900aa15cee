"""The proxy's deployments as our capabilities see them, and which ones lack their platform config.

A deployment whose ``litellm_params`` name an ``os.environ/NAME`` that is unset or empty on this
machine (a provider key such as ``GROQ_API_KEY``, or a local server's ``OLLAMA_API_BASE``) cannot
serve anyone with the platform's credentials: LiteLLM resolves the reference to ``None``
(``secret_managers.main.get_secret`` returns ``os.environ.get(name)``) and would still send every
caller there, to fail slowly. Such a deployment is **BYOK-only** when only its ``api_key`` is missing:
routing offers it only to callers who stored their own key for its provider (``byok`` injects that
key per attempt); it is **unconfigured** when anything else is missing (``api_base``: a caller's key
cannot supply an endpoint), and routing offers it to nobody. Health probes neither, and the APIs
show them as ``byok_only`` / ``unconfigured``.

Which references were missing is read from the *raw* config (``core.settings`` loads the YAML
unresolved), and confirmed against the live router: a value the router did resolve (e.g. from a
secret manager) is not missing. Raw entries are matched to router deployments by group and model
string, in config order (``Router.set_model_list`` keeps it).

:func:`snapshot` is rebuilt only when the router object or its deployment count changes; the
request path reads its frozen dicts (no I/O).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "os.environ/"


def missing_refs(params: Mapping[str, Any]) -> dict[str, str]:
    """``{param: NAME}`` for every ``os.environ/NAME`` in ``params`` that is unset or empty here."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            name = value[len(ENV_PREFIX):]
            if not os.environ.get(name):
                out[str(key)] = name
    return out


def missing_in_config(config: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """``(model group, unset variable names)`` per deployment of ``model_list`` missing any (startup log)."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for entry in config.get("model_list") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("litellm_params"), dict):
            continue
        params = entry["litellm_params"]
        if params.get("mock_response") is not None:
            continue
        missing = missing_refs(params)
        if missing:
            out.append((str(entry.get("model_name") or "?"), tuple(sorted(set(missing.values())))))
    return out


def startup_line(config: Mapping[str, Any]) -> str | None:
    """The one line startup logs about BYOK-only deployments (None when there are none)."""
    missing = missing_in_config(config)
    if not missing:
        return None
    listed = ", ".join(f"{group} ({', '.join(names)})" for group, names in missing)
    return (f"litellm-plugins: {len(missing)} deployment(s) are BYOK-only (their os.environ/ settings are "
            f"unset; served only to callers with their own provider key): {listed}")


def _provider(params: Mapping[str, Any]) -> str:
    custom = params.get("custom_llm_provider")
    model = str(params.get("model") or "")
    if isinstance(custom, str) and custom:
        return custom
    try:
        from litellm_plugins.byok.providers import provider_of
        return provider_of(model, None) or (model.split("/", 1)[0] if "/" in model else "openai")
    except Exception:  # noqa: BLE001 - unknown model shape: its prefix is the best name we have
        return model.split("/", 1)[0] if "/" in model else "openai"


# The one setting a caller's own key replaces (``byok`` injects ``api_key`` per attempt). A deployment
# missing anything else (e.g. a local server's ``api_base``) cannot be served by anyone: *unconfigured*.
BYOK_REPLACES = frozenset({"api_key"})


@dataclass(frozen=True, slots=True)
class Entry:
    model_id: str
    group: str
    provider: str
    missing: tuple[str, ...]  # unset variable names; non-empty = no platform config
    byok_servable: bool = True  # only api_key is missing: a caller's own key for `provider` serves it

    @property
    def status(self) -> str | None:
        """``byok_only`` / ``unconfigured`` / None (has its platform config)."""
        if not self.missing:
            return None
        return "byok_only" if self.byok_servable else "unconfigured"


class Catalog:
    """Deployment id -> group / provider / missing settings, bound to one router instance."""

    def __init__(self, router: Any, config: Mapping[str, Any] | None) -> None:
        self.router = router
        model_list = list(getattr(router, "model_list", None) or ())
        self.size = len(model_list)
        raw: dict[tuple[str, str], list[dict[str, str]]] = {}
        for entry in (config or {}).get("model_list") or []:
            if isinstance(entry, dict) and isinstance(entry.get("litellm_params"), dict):
                params = entry["litellm_params"]
                key = (str(entry.get("model_name") or ""), str(params.get("model") or ""))
                refs = {} if params.get("mock_response") is not None else missing_refs(params)
                raw.setdefault(key, []).append(refs)
        entries: dict[str, Entry] = {}
        groups: dict[str, list[Entry]] = {}
        for deployment in model_list:
            params = deployment.get("litellm_params") or {}
            model_id = (deployment.get("model_info") or {}).get("id")
            group = deployment.get("model_name")
            if model_id is None or group is None:
                continue
            queue = raw.get((str(group), str(params.get("model") or "")))
            refs = queue.pop(0) if queue else {}
            # Confirmed by the router: a value it resolved after all (secret manager) is not missing.
            unset = {key: name for key, name in refs.items() if not params.get(key)}
            item = Entry(str(model_id), str(group), _provider(params), tuple(sorted(set(unset.values()))),
                         set(unset) <= BYOK_REPLACES)
            entries[item.model_id] = item
            groups.setdefault(item.group, []).append(item)
        self.entries = entries
        self.group_of = {i: e.group for i, e in entries.items()}
        self.byok_only = frozenset(i for i, e in entries.items() if e.missing)
        # Groups none of whose deployments has its platform config: group -> the providers a
        # caller's own key must be for (any one of them serves).
        # Empty set: nobody can use the group (unconfigured).
        self.byok_only_groups: dict[str, frozenset[str]] = {
            g: frozenset(e.provider for e in items if e.byok_servable)
            for g, items in groups.items() if all(e.missing for e in items)}

    def provider_of(self, model_id: Any) -> str | None:
        entry = self.entries.get(str(model_id)) if model_id is not None else None
        return entry.provider if entry is not None else None

    def keyless_for(self, own_providers: frozenset[str] | tuple[str, ...]) -> frozenset[str]:
        """Deployment ids a caller holding keys for ``own_providers`` cannot use."""
        if not own_providers:
            return self.byok_only
        own = frozenset(own_providers)
        return frozenset(i for i in self.byok_only
                         if not (self.entries[i].byok_servable and self.entries[i].provider in own))


def current_router() -> Any | None:
    """The proxy's ``llm_router`` (None outside a proxy, or before it loaded its config).

    Read through ``sys.modules`` so importing our packages never imports ``proxy_server`` (our hook
    modules are themselves imported while ``proxy_server`` loads the config).
    """
    module = sys.modules.get("litellm.proxy.proxy_server")
    return getattr(module, "llm_router", None) if module is not None else None


def _raw_config() -> Mapping[str, Any] | None:
    from litellm_plugins.core import runtime
    rt = runtime.current()
    return rt.config if rt is not None else None


_cached: Catalog | None = None


def snapshot() -> Catalog | None:
    """The catalog of the live router (None before the proxy loaded its config)."""
    global _cached
    router = current_router()
    if router is None:
        return None
    cached = _cached
    if cached is not None and cached.router is router and cached.size == len(router.model_list or ()):
        return cached
    _cached = cached = Catalog(router, _raw_config())
    return cached
