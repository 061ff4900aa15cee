"""A pre-call hook listed *after* ours, for tests of what happens to a hold when a later hook refuses.

``tests.support.later_hook.later_hook`` in ``litellm_settings.callbacks`` raises on requests carrying
header ``x-test-later-hook``: ``plain`` raises a plain exception (LiteLLM answers 500 and runs its
failure hook), ``ratelimit`` raises LiteLLM's ``ProxyRateLimitError`` for the model group named by header
``x-test-limited-model`` (with a configured fallback LiteLLM then re-runs every pre-call hook on a
fresh copy of the request, for the fallback group).
"""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger

HEADER = "x-test-later-hook"


class LaterHook(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> None:
        headers = (data.get("proxy_server_request") or {}).get("headers") or {}
        mode = headers.get(HEADER)
        if mode == "plain":
            raise RuntimeError("refused by a later hook")
        if mode == "ratelimit" and data.get("model") == headers.get("x-test-limited-model"):
            from litellm.proxy.common_utils.proxy_rate_limit_error import ProxyRateLimitError

            # Only the limited group: LiteLLM's re-run for the fallback group goes through.
            raise ProxyRateLimitError(detail="rate limited by a later hook", model=data.get("model"))
        return None


later_hook = LaterHook()
