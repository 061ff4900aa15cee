"""Per-request facts our hooks hand to each other, carried in LiteLLM's own request metadata.

``data["metadata"]["litellm_plugins"]`` set in ``async_pre_call_hook`` is the *same dict* LiteLLM
passes as ``kwargs["metadata"]`` to ``async_pre_call_deployment_hook`` and as
``kwargs["litellm_params"]["metadata"]`` to the logging callbacks (verified on 1.102.4), so a fact
recorded early (routing decision, hold) or per attempt (BYOK key used) is there at settle time.

Which dict is "LiteLLM's metadata" depends on the route (docs/litellm.md fact 27): on ``/v1/responses``,
``/v1/messages``, files, batches, threads and assistants LiteLLM keeps its own metadata in
``data["litellm_metadata"]``, because there ``data["metadata"]`` is the API's own field and goes to the
provider (OpenAI's Responses API accepts only string values there; Anthropic only ``user_id``). Our
context goes where LiteLLM keeps its own, decided by the request's path as LiteLLM decides it, and
is found again in either dict by its type.

LiteLLM forwards this metadata to logging integrations: never put a secret in it.

Trust: a client may send ``{"metadata": {"litellm_plugins": {...}}}`` in the request body and LiteLLM
passes it through unchanged. Only a :class:`RequestContext` — created by our own pre-call hook — is
ever trusted; any plain dict under our key came from the client and is replaced (pre-call) or ignored
(per attempt, logging). Otherwise a caller could forge ``account``, ``byok_used`` or ``hold``.

Keys (each owned by one capability):
  account        core     account id the request is billed to (``user:…``/``team:…``/``key:…``)
  requested_model routing the model name the client sent
  power_level    routing  eco / balanced / precision / custom
  tier           routing  caller's tier
  model_group    routing  model group chosen (``data["model"]`` after routing)
  degraded       routing  True when routed to a cheaper level for lack of credits
  escalated      routing  True when moved to a higher level because no model of the asked one can serve
  byok_providers routing  providers the caller holds a usable BYOK key for (tuple; only while some
                          deployment is BYOK-only, core.catalog) -- read by routing's router filter
  byok_provider  byok     provider for which the caller has a key usable on this request
  byok_policy    byok     "prefer" | "only"
  byok_used      byok     True once an attempt went out with the caller's key (set per attempt)
  hold           credits  {"amount": units, "account": id} placed before the call
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

CONTEXT_KEY = "litellm_plugins"
METADATA_KEYS = ("metadata", "litellm_metadata")
# LiteLLM's rule (proxy/litellm_pre_call_utils.py ``metadata_variable_name_for_route``, both releases):
# a route containing one of these keeps LiteLLM's metadata in ``litellm_metadata``.
LITELLM_METADATA_ROUTES = ("batches", "bedrock", "/v1/messages", "responses", "files", "thread", "assistant")


class RequestContext(dict[str, Any]):
    """A context our hooks created. JSON from a client can never produce this type."""


def metadata_name(data: dict[str, Any]) -> str:
    """``"litellm_metadata"`` or ``"metadata"``: where LiteLLM keeps its metadata for this request."""
    request = data.get("proxy_server_request")
    url = request.get("url") if isinstance(request, dict) else None
    if isinstance(url, str) and url:
        path = urlsplit(url).path
        if any(route in path for route in LITELLM_METADATA_ROUTES):
            return "litellm_metadata"
        return "metadata"
    # No recorded route (direct SDK use, unit tests): LiteLLM's bucket is the one it filled.
    if isinstance(data.get("litellm_metadata"), dict) and not isinstance(data.get("metadata"), dict):
        return "litellm_metadata"
    return "metadata"


def litellm_metadata(data: dict[str, Any]) -> dict[str, Any] | None:
    """LiteLLM's own metadata dict of a request, a per-attempt kwargs or logging params: the one that
    holds our context, else the one LiteLLM filled with the caller's identity, else ``metadata``."""
    fallback = None
    for name in METADATA_KEYS:
        metadata = data.get(name)
        if isinstance(metadata, dict):
            if isinstance(metadata.get(CONTEXT_KEY), RequestContext):
                return metadata
            if fallback is None or "user_api_key_hash" in metadata and "user_api_key_hash" not in fallback:
                fallback = metadata
    return fallback


def find(data: dict[str, Any]) -> RequestContext | None:
    """The context our pre-call hook created, in either metadata dict; None if there is none."""
    for name in METADATA_KEYS:
        metadata = data.get(name)
        if isinstance(metadata, dict):
            context = metadata.get(CONTEXT_KEY)
            if isinstance(context, RequestContext):
                return context
    return None


def for_request(data: dict[str, Any]) -> RequestContext:
    """The context of a request being pre-processed (``async_pre_call_hook``'s ``data``).

    Replaces anything the client put under our key with a fresh, trusted context.
    """
    context = find(data)
    if context is not None:
        return context
    name = metadata_name(data)
    metadata = data.get(name)
    if not isinstance(metadata, dict):
        metadata = data[name] = {}
    context = metadata[CONTEXT_KEY] = RequestContext()
    return context


def for_attempt(kwargs: dict[str, Any]) -> RequestContext:
    """The context inside ``async_pre_call_deployment_hook`` (``kwargs["metadata"]``)."""
    return for_request(kwargs)


def from_logging(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The context in ``async_log_success_event`` / ``async_log_failure_event`` kwargs (read-only).

    Empty unless our pre-call hook created it: a client-sent dict under our key is ignored.
    """
    params = kwargs.get("litellm_params")
    context = find(params) if isinstance(params, dict) else None
    if context is None:
        context = find(kwargs)
    return context if context is not None else {}
