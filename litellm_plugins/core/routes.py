"""Our HTTP routes under ``/plugins/...``, mounted on the proxy's own FastAPI app.

Authentication is LiteLLM's (``user_api_key_auth``: virtual keys, master key, custom auth). Its route
checks refuse non-admin keys on routes it does not know unless each key lists them in
``allowed_routes``; registering ``/plugins/*`` as a self-managed route lets plain user keys reach
their own data, and every route then decides admin-vs-owner itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.middleware.exceptions import ExceptionMiddleware
from litellm.proxy._types import LiteLLMRoutes, UserAPIKeyAuth
from litellm.proxy.auth.user_api_key_auth import user_api_key_auth

from litellm_plugins.core import runtime
from litellm_plugins.core.errors import bad_request, forbidden
from litellm_plugins.core.identity import Caller
from litellm_plugins.core.migrator import status as migration_status
from litellm_plugins.core.secrets import mask_tree

PREFIX = "/plugins"
USER_ROUTE_PATTERN = f"{PREFIX}/*"


MAX_BODY_BYTES = 1_048_576
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def json_object_body(request: Request) -> None:
    """Runs before LiteLLM's auth, which parses the body itself and answers a JSON array (or other
    non-object) with a 500; our routes take JSON objects only, so say so with a 400 instead."""
    if request.method not in BODY_METHODS:
        return
    raw = await request.body()  # cached by Starlette: auth and the route read the same bytes
    if not raw:
        return
    if len(raw) > MAX_BODY_BYTES:
        bad_request(f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        bad_request("request body must be a JSON object")
    if not isinstance(body, dict):
        bad_request("request body must be a JSON object")


async def current_caller(_: None = Depends(json_object_body),
                         auth: UserAPIKeyAuth = Depends(user_api_key_auth)) -> Caller:
    return Caller.from_auth(auth)


async def admin_caller(caller: Caller = Depends(current_caller)) -> Caller:
    if not caller.is_admin:
        forbidden("this route needs the master key or a proxy_admin key")
    return caller


def resolve_account(caller: Caller, account: str | None, action: str = "read") -> str:
    """The account a route acts on: the caller's own (``account`` omitted or equal to it, resolved with
    the core ``account_order``), or any named one for an admin. 400 when the key has no account of
    its own, 403 when a non-admin names another (``action`` words the message: "read", "read or change")."""
    own = caller.account(runtime.get().settings.account_order)
    if account is None or account == own:
        if own is None:
            bad_request("this key has no account (no user, team or key hash)", "account")
        return own
    if not caller.is_admin:
        forbidden(f"a non-admin key can only {action} its own account", "account")
    return account


ready_router = APIRouter(prefix=PREFIX, tags=["litellm-plugins"])


@ready_router.get("/ready")
async def ready() -> JSONResponse:
    """Unauthenticated like LiteLLM's ``/health/readiness``: reachability only, no data."""
    rt = runtime.current()
    if rt is None:
        return JSONResponse({"status": "not_ready", "reason": "plugins not started"}, status_code=503)
    body: dict[str, Any] = {}
    ok = True
    try:
        async with rt.pool.acquire(timeout=2.0) as conn:
            state = await asyncio.wait_for(migration_status(conn), 2.0)
        body["postgres"] = {"reachable": True}
        body["migrations"] = {"current": state.current, "applied": len(state.applied),
                              "pending": state.pending}
        ok &= state.current
    except Exception as exc:  # noqa: BLE001 - readiness reports every failure as "not ready"
        body["postgres"] = {"reachable": False, "error": type(exc).__name__}
        ok = False
    try:
        await asyncio.wait_for(rt.redis.ping(), 2.0)
        body["redis"] = {"reachable": True}
    except Exception as exc:  # noqa: BLE001
        body["redis"] = {"reachable": False, "error": type(exc).__name__}
        ok = False
    body["tasks"] = rt.tasks.describe()
    ok &= rt.tasks.healthy
    for name, report in rt.readiness.items():
        try:
            body[name] = await asyncio.wait_for(report(), 2.0)
        except Exception as exc:  # noqa: BLE001 - a report never makes the proxy unready
            body[name] = {"error": type(exc).__name__}
    body["status"] = "ready" if ok else "not_ready"
    return JSONResponse(body, status_code=200 if ok else 503)


@ready_router.get("/whoami")
async def whoami(caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    """Who the proxy thinks you are: handy when a key's metadata (tier, team) is not what you expect."""
    return {"user_id": caller.user_id, "team_id": caller.team_id, "account": caller.account(runtime.get().settings.account_order),
            "is_admin": caller.is_admin, "tier": caller.metadata.get("tier") or caller.team_metadata.get("tier")}


@ready_router.get("/settings", dependencies=[Depends(admin_caller)])
async def effective_settings() -> dict[str, Any]:
    """The validated ``litellm_plugins:`` settings this worker runs with, secrets masked (admin only)."""
    return mask_tree(runtime.get().settings.model_dump(mode="json"))


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's parameter validation of our routes, in OpenAI's shape (400, ``param`` named).

    Never echoes the input: a body may carry a provider key."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    if first.get("type") == "json_invalid":
        message, param = "request body must be valid JSON", None
    else:
        param = loc[-1] if loc else None
        where = f"'{'.'.join(loc)}'" if loc else "request"
        message = f"{where}: {first.get('msg', 'invalid value')}"
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": "400"}}, status_code=400)


def install_validation_errors(app: FastAPI) -> None:
    """Our routes answer malformed input (invalid JSON, a query parameter of the wrong type) with a 400
    in OpenAI's shape instead of FastAPI's 422 ``{"detail": [...]}``; other routes keep LiteLLM's handler.

    The handler table is copied into Starlette's ``ExceptionMiddleware`` when the middleware stack is
    built, which happened before our startup ran, so the live instance is updated too.
    """
    previous = app.exception_handlers.get(RequestValidationError)
    if getattr(previous, "litellm_plugins", False):
        return

    async def handler(request: Request, exc: Exception) -> Any:
        if request.url.path.startswith(PREFIX + "/") and isinstance(exc, RequestValidationError):
            return _validation_error(exc)
        if previous is None:
            from fastapi.exception_handlers import request_validation_exception_handler
            return await request_validation_exception_handler(request, exc)  # type: ignore[arg-type]
        return await previous(request, exc)

    handler.litellm_plugins = True  # type: ignore[attr-defined]
    app.exception_handlers[RequestValidationError] = handler
    node: Any = getattr(app, "middleware_stack", None)
    for _ in range(64):
        if node is None:
            break
        if isinstance(node, ExceptionMiddleware):
            node.add_exception_handler(RequestValidationError, handler)
            break
        node = getattr(node, "app", None)


def mount(app: FastAPI, routers: list[APIRouter]) -> None:
    """Include our routers once per worker and let non-admin keys through LiteLLM's route check."""
    self_managed = LiteLLMRoutes.self_managed_routes.value
    if USER_ROUTE_PATTERN not in self_managed:
        self_managed.append(USER_ROUTE_PATTERN)
    install_validation_errors(app)
    mounted = {getattr(r, "path", None) for r in app.router.routes}
    # FastAPI >= 0.165 keeps an included router as one entry (no path): recognise it by its router
    included = {id(r.original_router) for r in app.router.routes if hasattr(r, "original_router")}
    for router in [ready_router, *routers]:
        if id(router) not in included and not any(getattr(r, "path", None) in mounted for r in router.routes):
            app.include_router(router)
