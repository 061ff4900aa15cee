"""Settings of the guard capability (`litellm_plugins.guard` in proxy_config.yaml).

The guard checks every LLM request before any other hook of ours runs (docs/guard.md). Most of its
limits are OpenAI's documented ranges and are not settings: a request outside them is refused by
OpenAI too, so letting an operator widen them would only move the error to the provider. What an
operator may reasonably want to tighten is a setting: how many choices one request may ask for (each
is billed), and how large a body the proxy reads at all.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

OPENAI_MAX_N = 128  # OpenAI's documented maximum of `n` (chat completions)
OPENAI_MAX_BEST_OF = 20  # OpenAI's documented maximum of `best_of` (text completions)


class GuardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    max_n: int = Field(default=OPENAI_MAX_N, ge=1, le=OPENAI_MAX_N,
                       description="Largest `n` (choices per request; each one is billed). OpenAI allows 1-128.")
    max_best_of: int = Field(default=OPENAI_MAX_BEST_OF, ge=1, le=OPENAI_MAX_BEST_OF,
                             description="Largest `best_of` of a text completion (each candidate is billed).")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024,
                                description="Largest request body the proxy reads on an LLM route (413 above); "
                                            "base64 images count, so raise it for large vision requests.")
