"""``GET /plugins/metrics``: our metrics in Prometheus' text format, when LiteLLM does not serve them.

Mounted only when LiteLLM's ``prometheus`` callback is not listed (with it, the same samples are on
LiteLLM's own ``/metrics``: one scrape endpoint either way). Authentication follows LiteLLM's
``/metrics``: ``litellm_settings.require_auth_for_metrics_endpoint`` (LiteLLM's default: true) — any
valid key, as LiteLLM accepts on ``/metrics``; ``false`` serves it without a key. The registry is
rendered in a worker thread (in multiprocess mode that reads every worker's files), as LiteLLM's
``/metrics`` does, so a scrape never stalls the event loop.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from litellm_plugins.metrics import multiproc, record

PATH = "/plugins/metrics"
router = APIRouter(tags=["litellm-plugins: metrics"])


def _auth_required() -> bool:
    import litellm

    return getattr(litellm, "require_auth_for_metrics_endpoint", True) is not False


def _render(accept: str) -> tuple[bytes, str]:
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept)
    return encoder(multiproc.registry()), content_type


async def get_metrics(request: Request) -> Response:
    if _auth_required():
        from litellm.proxy.auth.user_api_key_auth import user_api_key_auth

        # LiteLLM's own auth (virtual keys, master key, custom auth); its errors are its 401s.
        h = request.headers
        await user_api_key_auth(
            request=request, api_key=h.get("Authorization") or "", azure_api_key_header=h.get("api-key") or "",
            anthropic_api_key_header=h.get("x-api-key"), google_ai_studio_api_key_header=h.get("x-goog-api-key"),
            azure_apim_header=h.get("Ocp-Apim-Subscription-Key") or "",
            custom_litellm_key_header=h.get("x-litellm-api-key"))
    record.publish()  # this worker's credit units up to now (other workers publish on their sampler tick)
    body, content_type = await asyncio.to_thread(_render, request.headers.get("accept", ""))
    return Response(body, media_type=content_type)


def install_route() -> None:
    if not route_installed():
        router.add_api_route(PATH, get_metrics, methods=["GET"], include_in_schema=True)


def route_installed() -> bool:
    return any(getattr(r, "path", None) == PATH for r in router.routes)
