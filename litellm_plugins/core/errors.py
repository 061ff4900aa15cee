"""OpenAI-shaped errors, raised the way LiteLLM expects from hooks and routes.

LiteLLM renders ``ProxyException`` as ``{"error": {"message", "type", "param", "code"}}`` with the
status in ``code`` — for its own routes, for ours mounted on its app, and for pre-call hook
rejections of streaming requests too. So every error we raise is a ``ProxyException``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from litellm.proxy._types import ProxyException


class SettingsError(Exception):
    """Invalid or missing plugin settings; the message names every bad key.

    Lives here (not in ``core.settings``) so capability ``settings.py`` modules, which
    ``core.settings`` imports, can raise it from ``check_config`` without an import cycle.
    """


def plugin_error(status: int, message: str, type_: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> ProxyException:
    # Imported here, not at module level: the CLI (`litellm-plugins ...`) loads our settings, which
    # import this module, and importing litellm costs it seconds (tens under load) for nothing.
    from litellm.proxy._types import ProxyException
    exc = ProxyException(message=message, type=type_, param=param, code=status, headers=headers)
    # LiteLLM's text-completions route re-wraps any exception with ``code=getattr(e, "status_code",
    # 500)``: without this attribute a hook's 400/402/503 on /v1/completions became a 500.
    exc.status_code = int(exc.code) if str(exc.code).isdigit() else status
    return exc


def bad_request(message: str, param: str | None = None) -> NoReturn:
    raise plugin_error(400, message, "invalid_request_error", param)


def unauthorized(message: str) -> NoReturn:
    raise plugin_error(401, message, "authentication_error")


def forbidden(message: str, param: str | None = None) -> NoReturn:
    raise plugin_error(403, message, "permission_denied", param)


def not_found(message: str, param: str | None = None) -> NoReturn:
    raise plugin_error(404, message, "not_found_error", param)


def service_unavailable(message: str, retry_after_s: int | None = None) -> NoReturn:
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    raise plugin_error(503, message, "service_unavailable", headers=headers)
