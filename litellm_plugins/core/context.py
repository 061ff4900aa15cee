"""Per-request facts our hooks hand to each other, carried in LiteLLM's own request metadata.

``data["metadata"]["litellm_plugins"]`` set in ``async_pre_call_hook`` is the *same dict* LiteLLM
passes as ``kwargs["metadata"]`` to ``async_pre_call_deployment_hook`` and as
``kwargs["litellm_params"]["metadata"]`` to the logging callbacks (verified on 1.102.4), so a fact
recorded early (routing decision, hold) or per attempt (BYOK key used) is there at settle time.

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

CONTEXT_KEY = "litellm_plugins"


class RequestContext(dict[str, Any]):
    """A context our hooks created. JSON from a client can never produce this type."""


def for_request(data: dict[str, Any]) -> RequestContext:
    """The context of a request being pre-processed (``async_pre_call_hook``'s ``data``).

    Replaces anything the client put under our key with a fresh, trusted context.
    """
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        metadata = data["metadata"] = {}
    context = metadata.get(CONTEXT_KEY)
    if not isinstance(context, RequestContext):
        context = metadata[CONTEXT_KEY] = RequestContext()
    return context


def for_attempt(kwargs: dict[str, Any]) -> RequestContext:
    """The context inside ``async_pre_call_deployment_hook`` (``kwargs["metadata"]``)."""
    return for_request(kwargs)


def from_logging(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The context in ``async_log_success_event`` / ``async_log_failure_event`` kwargs (read-only).

    Empty unless our pre-call hook created it: a client-sent dict under our key is ignored.
    """
    metadata = (kwargs.get("litellm_params") or {}).get("metadata") or kwargs.get("metadata") or {}
    context = metadata.get(CONTEXT_KEY) if isinstance(metadata, dict) else None
    return context if isinstance(context, RequestContext) else {}
