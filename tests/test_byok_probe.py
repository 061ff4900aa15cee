"""A logging integration that records what LiteLLM hands to callbacks listed *after* ours.

The BYOK end-to-end tests add ``tests.test_byok_probe.probe`` to ``litellm_settings.callbacks`` in
the proxies they start, then scan the file for plaintext user keys. It stands for any operator
integration (Langfuse, S3, ...) that would persist those payloads. Also unit tests the scrubber.
"""

from __future__ import annotations

import json
import os
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

PROBE_FILE_ENV = "BYOK_PROBE_FILE"


def _dump(event: str, kwargs: Any) -> None:
    path = os.environ.get(PROBE_FILE_ENV)
    if not path:
        return
    try:
        text = json.dumps(kwargs, default=lambda o: repr(o))
    except Exception as exc:  # noqa: BLE001 - circular structures: fall back to repr
        text = repr(kwargs) + f" ({type(exc).__name__})"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{event}\t{text}\n")


class LoggingProbe(CustomLogger):
    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        _dump("pre_api_call", kwargs)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        _dump("success", kwargs)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        _dump("failure", kwargs)


probe = LoggingProbe()


def test_scrub_replaces_the_key_everywhere_litellm_puts_it() -> None:
    from litellm_plugins.byok.hook import SCRUBBED, _scrub
    secret = "sk-user-secret-123456"
    details = {"api_key": secret, "litellm_params": {"api_key": secret, "api_base": "http://x"},
               "additional_args": {"headers": {"Authorization": f"Bearer {secret}"}}}
    _scrub(details, secret)
    assert secret not in json.dumps(details)
    assert details["api_key"].startswith(SCRUBBED) and details["api_key"].endswith("3456")
    other = {"api_key": "sk-platform-openai"}
    _scrub(other, secret)  # a different key (the platform's) is left alone
    assert other["api_key"] == "sk-platform-openai"
