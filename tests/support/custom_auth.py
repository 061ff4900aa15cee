"""``general_settings.custom_auth`` for tests: stands in for admin-UI virtual keys.

LiteLLM's own key database needs Prisma engines that cannot be downloaded here, so test keys are
described in a JSON file (``LITELLM_PLUGINS_TEST_KEYS``; re-read when it changes, so a test can add
keys while the proxy runs) and turned into the same ``UserAPIKeyAuth`` a real virtual key produces.
"""

from __future__ import annotations

import json
import os

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth
from litellm.proxy.utils import hash_token

_cache: tuple[float, dict[str, dict]] = (-1.0, {})


def _keys() -> dict[str, dict]:
    global _cache
    path = os.environ.get("LITELLM_PLUGINS_TEST_KEYS")
    if not path or not os.path.exists(path):
        return {}
    mtime = os.path.getmtime(path)
    if mtime != _cache[0]:
        with open(path, encoding="utf-8") as fh:
            _cache = (mtime, json.load(fh))
    return _cache[1]


async def authenticate(request: Request, api_key: str) -> UserAPIKeyAuth:
    key = api_key.removeprefix("Bearer ").strip()
    if key and key == os.environ.get("LITELLM_MASTER_KEY"):
        return UserAPIKeyAuth(api_key=hash_token(key), token=hash_token(key), user_id="proxy-admin",
                              user_role=LitellmUserRoles.PROXY_ADMIN)
    spec = _keys().get(key)
    if spec is None:
        raise ProxyException(message="Authentication Error: invalid test key", type="auth_error",
                             param="api_key", code=401)
    role = spec.get("user_role", LitellmUserRoles.INTERNAL_USER.value)
    return UserAPIKeyAuth(
        api_key=hash_token(key), token=hash_token(key), user_id=spec.get("user_id"),
        team_id=spec.get("team_id"), models=spec.get("models", []), metadata=spec.get("metadata", {}),
        team_metadata=spec.get("team_metadata", {}), user_role=LitellmUserRoles(role),
        **spec.get("auth", {}),
    )
