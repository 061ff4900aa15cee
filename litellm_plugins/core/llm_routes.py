"""Which HTTP requests are LLM calls our hooks touch, and how an ASGI wrapper goes around the proxy.

Shared by the guard (its request check runs before LiteLLM reads the body) and credits (no hold
outlives its request): both wrap LiteLLM's app as pure ASGI middleware at worker startup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# POST paths of LiteLLM's LLM routes, by their last segments (LiteLLM serves each under /v1/...,
# /..., /engines/{model}/... and /openai/deployments/{model}/...), and the call type LiteLLM gives
# them. "/chat/completions" is tested before "/completions". Anthropic's Messages API is served at
# /v1/messages only ("/v1/threads/{id}/messages" is the Assistants API, not an LLM call).
LLM_SUFFIXES = (("/chat/completions", "acompletion"), ("/completions", "atext_completion"),
                ("/embeddings", "aembedding"), ("/responses", "aresponses"),
                ("/v1/messages", "anthropic_messages"))


def call_type_of(scope: Scope) -> str | None:
    """LiteLLM's call type of an LLM ``POST``; None for anything else (cheap: a few string tests)."""
    if scope.get("type") != "http" or scope.get("method") != "POST":
        return None
    path = scope.get("path") or ""
    if path.endswith("/"):
        path = path.rstrip("/")
    for suffix, call_type in LLM_SUFFIXES:
        if path.endswith(suffix):
            return call_type
    return None


def install(app: Any, wrapper: Callable[[ASGIApp], ASGIApp], marker: str) -> None:
    """Wrap the proxy's app once per worker with ``wrapper``, whose result carries attribute ``marker``.

    Our startup runs inside LiteLLM's lifespan, when Starlette has already built its middleware
    stack (``add_middleware`` then raises), so the built stack itself is wrapped. Our wrappers set
    ``litellm_plugins_wrapper``; a second install (a second startup in one process) finds its own.
    """
    stack = getattr(app, "middleware_stack", None)
    if stack is None:
        stack = app.build_middleware_stack()
    node = stack
    while getattr(node, "litellm_plugins_wrapper", False):
        if getattr(node, marker, False):
            return
        node = node.app
    app.middleware_stack = wrapper(stack)
