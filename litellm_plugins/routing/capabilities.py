"""What a request needs and what each model group offers (capability-aware routing, issue 8).

*Offers* are computed once per worker from ``model_list``: per capability the deployment's
``model_info.supports_<cap>`` when the operator set it, else LiteLLM's own model info for the
deployment's model, else "not supported" (an unknown model is not trusted with images or tools);
limits from ``model_info.max_input_tokens`` / ``max_output_tokens``, else LiteLLM's, else unlimited.
A group with several deployments offers what *all* of them offer (LiteLLM may pick any).

*Needs* are read from the request body in one pass over the messages (chat, text completions),
the ``input`` items (Responses API) or the messages and ``system`` (Anthropic Messages). Input tokens are estimated
from character counts (``len`` of each string, O(1) in CPython) divided by ``chars_per_token``:
nothing is tokenized on the request path, so credits' own estimate does not make it "twice".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VISION, AUDIO, TOOLS, SCHEMA, REASONING = ("vision", "audio_input", "function_calling", "response_schema",
                                           "reasoning")
CAPABILITIES = (VISION, AUDIO, TOOLS, SCHEMA, REASONING)
LABELS = {VISION: "vision (image input)", AUDIO: "audio input", TOOLS: "function calling (tools)",
          SCHEMA: "structured output (response_format json_schema)", REASONING: "reasoning"}
CONTEXT = "context window"
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_AUDIO_PARTS = frozenset({"input_audio", "audio"})
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})  # chat / Anthropic, Responses API


@dataclass(frozen=True, slots=True)
class Offer:
    caps: frozenset[str]
    max_input: int | None
    max_output: int | None


@dataclass(frozen=True, slots=True)
class Needs:
    caps: frozenset[str]
    input_tokens: int
    output_tokens: int | None

    def describe(self, missing: list[str]) -> str:
        parts = []
        for item in missing:
            if item == CONTEXT:
                parts.append(f"a context window for ~{self.input_tokens} input tokens"
                             + (f" and {self.output_tokens} output tokens" if self.output_tokens else ""))
            else:
                parts.append(LABELS.get(item, item))
        return ", ".join(parts)


NO_NEEDS = Needs(frozenset(), 0, None)


def _litellm_info(model: str) -> Mapping[str, Any]:
    try:
        import litellm
        return litellm.get_model_info(model=model) or {}
    except Exception:  # noqa: BLE001 - unknown to LiteLLM's map: no information
        return {}


def _offer(deployment: Mapping[str, Any]) -> Offer:
    info = deployment.get("model_info") or {}
    params = deployment.get("litellm_params") or {}
    model = params.get("model")
    known: Mapping[str, Any] | None = None

    def value(key: str) -> Any:
        nonlocal known
        if key in info:
            return info[key]
        if known is None:
            known = _litellm_info(model) if isinstance(model, str) else {}
        return known.get(key)

    caps = frozenset(cap for cap in CAPABILITIES if value(f"supports_{cap}") is True)
    max_in, max_out = value("max_input_tokens"), value("max_output_tokens")
    return Offer(caps, max_in if isinstance(max_in, int) else None,
                 max_out if isinstance(max_out, int) else None)


def offers_from_config(config: Mapping[str, Any]) -> dict[str, Offer]:
    by_group: dict[str, Offer] = {}
    for deployment in config.get("model_list") or []:
        if not isinstance(deployment, dict) or not deployment.get("model_name"):
            continue
        group, offer = deployment["model_name"], _offer(deployment)
        previous = by_group.get(group)
        if previous is not None:
            offer = Offer(previous.caps & offer.caps, _min(previous.max_input, offer.max_input),
                          _min(previous.max_output, offer.max_output))
        by_group[group] = offer
    return by_group


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _content_chars(content: Any, caps: set[str]) -> int:
    """Characters of text in one message's content (a string or a list of parts); marks image/audio."""
    if isinstance(content, str):
        return len(content)
    chars = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                chars += len(part)
                continue
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in _TEXT_PARTS:
                text = part.get("text")
                if isinstance(text, str):
                    chars += len(text)
            elif kind in _IMAGE_PARTS:
                caps.add(VISION)
            elif kind in _AUDIO_PARTS:
                caps.add(AUDIO)
            elif kind == "tool_result":  # Anthropic: a tool's output, text or parts
                chars += _content_chars(part.get("content"), caps)
    return chars


def needs_of(data: Mapping[str, Any], chars_per_token: float) -> Needs:
    """Needs of a chat / text completion, a Responses API or an Anthropic Messages request, each read
    from its own shape: ``messages`` / ``prompt``; ``input`` (a string or items) + ``instructions``;
    ``messages`` + ``system``. Output limit: ``max_completion_tokens`` / ``max_tokens`` /
    ``max_output_tokens``."""
    caps: set[str] = set()
    if data.get("tools") or data.get("functions"):
        caps.add(TOOLS)
    fmt = data.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        caps.add(SCHEMA)
    text_cfg = data.get("text")  # Responses API: text.format {"type": "json_schema", ...}
    if isinstance(text_cfg, dict) and isinstance(text_cfg.get("format"), dict) \
            and text_cfg["format"].get("type") == "json_schema":
        caps.add(SCHEMA)
    if isinstance(data.get("output_format"), dict):  # Anthropic structured outputs
        caps.add(SCHEMA)
    reasoning = data.get("reasoning")  # Responses API: {"effort": ...}
    thinking = data.get("thinking")  # Anthropic: {"type": "enabled", ...}; "disabled" asks for none
    if data.get("reasoning_effort") or (isinstance(reasoning, dict) and reasoning.get("effort")) or (
            thinking and not (isinstance(thinking, dict) and thinking.get("type") == "disabled")):
        caps.add(REASONING)
    chars = 0
    messages = data.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                chars += _content_chars(message.get("content"), caps)
    items = data.get("input")  # Responses API (embeddings' input never reaches routing's needs)
    if isinstance(items, str):
        chars += len(items)
    elif isinstance(items, list):
        for item in items:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, dict):
                if "content" in item:
                    chars += _content_chars(item.get("content"), caps)
                elif isinstance(item.get("output"), str):  # function_call_output
                    chars += len(item["output"])
    for key in ("instructions", "system"):
        chars += _content_chars(data.get(key), caps)
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        chars += len(prompt)
    elif isinstance(prompt, list):  # text completions accept a batch of prompts
        chars += sum(len(p) for p in prompt if isinstance(p, str))
    output = data.get("max_completion_tokens") or data.get("max_tokens") or data.get("max_output_tokens")
    return Needs(frozenset(caps), int(chars / chars_per_token) + 1,
                 output if isinstance(output, int) and output > 0 else None)


def missing(offer: Offer | None, needs: Needs) -> list[str]:
    """What ``offer`` lacks for ``needs`` (empty = it can serve)."""
    if offer is None:
        return []  # a group we know nothing about (added at runtime): LiteLLM decides
    lacking = [cap for cap in CAPABILITIES if cap in needs.caps and cap not in offer.caps]
    if (offer.max_input is not None and needs.input_tokens > offer.max_input) or (
            offer.max_output is not None and needs.output_tokens is not None
            and needs.output_tokens > offer.max_output):
        lacking.append(CONTEXT)
    return lacking
