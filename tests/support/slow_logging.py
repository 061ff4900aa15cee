"""A logging callback listed *before* ours that makes LiteLLM's success logging of chosen calls slow.

LiteLLM awaits the success callbacks of a call one after the other, in ``litellm_settings.callbacks``
order, in a task of their own that starts as the response ends. With
``tests.support.slow_logging.slow_logging`` listed first, a call whose id (``x-litellm-call-id``)
starts with ``slowlog-`` reaches the credits callback ``DELAY_SECONDS`` after its client had the whole
response: the window a kill -9 must not lose anything in, held open long enough to kill inside it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

PREFIX = "slowlog-"
DELAY_SECONDS = 5.0


class SlowLogging(CustomLogger):
    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        if str(kwargs.get("litellm_call_id") or "").startswith(PREFIX):
            await asyncio.sleep(DELAY_SECONDS)


slow_logging = SlowLogging()
