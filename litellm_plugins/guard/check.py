"""The request check: is this an LLM request LiteLLM and the providers can serve? Pure, no I/O.

Why here and not at the provider: without it a body LiteLLM does not expect either crashed the
proxy (``"model": 123`` was a 500), or went out to every candidate provider with retries and
fallbacks (``"messages": "hi"``: 13-14 s, then a 400 carrying LiteLLM's Python traceback text), or
was silently passed on (``"n": 100000``, ``"max_tokens": -5``, ``"stream": "yes"``) — after a credit
hold had been placed for it. The guard's pre-call hook runs this before routing, BYOK and credits,
so a refused request moves no money and reaches no provider.

Rules are OpenAI's documented types and ranges for the fields named below; fields not named are
left to LiteLLM and the provider (extensions such as ``top_k`` or ``thinking`` vary by provider).
``null`` is accepted wherever OpenAI documents a field as optional. Error messages name the field
and the expected type or range, never the value sent (it may be huge, or a secret pasted in the
wrong place).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CHAT = "chat"
TEXT = "text"
EMBEDDINGS = "embeddings"
RESPONSES = "responses"

# LiteLLM's call types (the proxy's ``route_type``) -> what kind of request the body is.
CALL_KINDS: dict[str, str] = {
    "acompletion": CHAT, "completion": CHAT,
    "atext_completion": TEXT, "text_completion": TEXT,
    "aembedding": EMBEDDINGS, "embedding": EMBEDDINGS, "embeddings": EMBEDDINGS,
    "aresponses": RESPONSES, "responses": RESPONSES,
}

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
ROLES_NEEDING_CONTENT = frozenset({"system", "developer", "user", "tool"})
MAX_MODEL_NAME = 512


@dataclass(frozen=True)
class Limits:
    """The operator's limits (guard settings); everything else is OpenAI's fixed ranges."""

    max_n: int = 128
    max_best_of: int = 20


class RequestRejected(Exception):
    """A request refused by the check: safe to show as is (no value of the request in it)."""

    def __init__(self, message: str, param: str | None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _integer(data: dict[str, Any], name: str, low: int | None, high: int | None) -> None:
    value = data.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestRejected(f"'{name}' must be an integer, got {_type_name(value)}", name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise RequestRejected(f"'{name}' must be {_range(low, high)}", name)


def _number(data: dict[str, Any], name: str, low: float, high: float) -> None:
    value = data.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestRejected(f"'{name}' must be a number, got {_type_name(value)}", name)
    if value < low or value > high:
        raise RequestRejected(f"'{name}' must be {_range(low, high)}", name)


def _range(low: float | None, high: float | None) -> str:
    if high is None:
        return f"at least {low}"
    if low is None:
        return f"at most {high}"
    return f"between {low} and {high}"


def _boolean(data: dict[str, Any], name: str) -> None:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise RequestRejected(f"'{name}' must be a boolean (true or false), got {_type_name(value)}", name)


def _of_type(data: dict[str, Any], name: str, types: tuple[type, ...], expected: str) -> None:
    value = data.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
        raise RequestRejected(f"'{name}' must be {expected}, got {_type_name(value)}", name)


def _model(data: dict[str, Any]) -> None:
    model = data.get("model")
    if model is None:
        raise RequestRejected("'model' is required", "model")
    if not isinstance(model, str):
        raise RequestRejected(f"'model' must be a string, got {_type_name(model)}", "model")
    if not model.strip():
        raise RequestRejected("'model' must not be empty", "model")
    if len(model) > MAX_MODEL_NAME:
        raise RequestRejected(f"'model' must be at most {MAX_MODEL_NAME} characters", "model")


def _messages(data: dict[str, Any]) -> None:
    messages = data.get("messages")
    if messages is None:
        raise RequestRejected("'messages' is required", "messages")
    if not isinstance(messages, list):
        raise RequestRejected(f"'messages' must be an array of message objects, got {_type_name(messages)}",
                              "messages")
    if not messages:
        raise RequestRejected("'messages' must contain at least one message", "messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestRejected(f"'{where}' must be an object with 'role' and 'content', got "
                                  f"{_type_name(message)}", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise RequestRejected(f"'{where}.role' must be one of {', '.join(sorted(ROLES))}", f"{where}.role")
        content = message.get("content")
        if content is None:
            if role in ROLES_NEEDING_CONTENT:
                raise RequestRejected(f"'{where}.content' is required for role '{role}'", f"{where}.content")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise RequestRejected(f"'{where}.content[{j}]' must be a content part object, got "
                                          f"{_type_name(part)}", f"{where}.content[{j}]")
        elif not isinstance(content, str):
            raise RequestRejected(f"'{where}.content' must be a string or an array of content parts, got "
                                  f"{_type_name(content)}", f"{where}.content")


def _token_list(value: list[Any]) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _prompt(data: dict[str, Any]) -> None:
    prompt = data.get("prompt")
    if prompt is None:
        raise RequestRejected("'prompt' is required", "prompt")
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and prompt and (
            all(isinstance(p, str) for p in prompt) or _token_list(prompt)
            or all(isinstance(p, list) and p and _token_list(p) for p in prompt)):
        return
    raise RequestRejected("'prompt' must be a string, an array of strings, or an array of token arrays", "prompt")


def _embedding_input(data: dict[str, Any]) -> None:
    value = data.get("input")
    if value is None:
        raise RequestRejected("'input' is required", "input")
    if isinstance(value, str):
        if not value:
            raise RequestRejected("'input' must not be an empty string", "input")
        return
    if isinstance(value, list) and value and (
            all(isinstance(v, str) and v for v in value) or _token_list(value)
            or all(isinstance(v, list) and v and _token_list(v) for v in value)):
        return
    raise RequestRejected("'input' must be a non-empty string, an array of non-empty strings, or an array of "
                          "token arrays", "input")


def _responses_input(data: dict[str, Any]) -> None:
    value = data.get("input")
    if value is None:
        if data.get("previous_response_id") or data.get("prompt"):
            return  # a continuation or a stored prompt may carry no new input
        raise RequestRejected("'input' is required", "input")
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        raise RequestRejected("'input' must be a string or a non-empty array of input items", "input")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise RequestRejected(f"'input[{i}]' must be an input item object, got {_type_name(item)}",
                                  f"input[{i}]")


def _sampling(data: dict[str, Any]) -> None:
    _number(data, "temperature", 0, 2)
    _number(data, "top_p", 0, 1)
    _boolean(data, "stream")
    _of_type(data, "user", (str,), "a string")
    _of_type(data, "stream_options", (dict,), "an object")


def _stop(data: dict[str, Any]) -> None:
    stop = data.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise RequestRejected("'stop' must be a string or an array of strings", "stop")


def _penalties(data: dict[str, Any]) -> None:
    _number(data, "presence_penalty", -2, 2)
    _number(data, "frequency_penalty", -2, 2)
    _integer(data, "seed", None, None)
    _of_type(data, "logit_bias", (dict,), "an object")


def _chat(data: dict[str, Any], limits: Limits) -> None:
    _messages(data)
    _integer(data, "max_tokens", 1, None)
    _integer(data, "max_completion_tokens", 1, None)
    _integer(data, "n", 1, limits.max_n)
    _sampling(data)
    _penalties(data)
    _stop(data)
    _boolean(data, "logprobs")
    _integer(data, "top_logprobs", 0, 20)
    _boolean(data, "parallel_tool_calls")
    _boolean(data, "store")
    _of_type(data, "tools", (list,), "an array of tool objects")
    tools = data.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise RequestRejected(f"'tools[{i}]' must be a tool object, got {_type_name(tool)}", f"tools[{i}]")
    _of_type(data, "tool_choice", (str, dict), "a string or an object")
    _of_type(data, "response_format", (dict,), "an object")


def _text(data: dict[str, Any], limits: Limits) -> None:
    _prompt(data)
    _integer(data, "max_tokens", 1, None)
    _integer(data, "n", 1, limits.max_n)
    _integer(data, "best_of", 1, limits.max_best_of)
    n, best_of = data.get("n"), data.get("best_of")
    if isinstance(n, int) and isinstance(best_of, int) and best_of < n:
        raise RequestRejected("'best_of' must be at least 'n'", "best_of")
    _sampling(data)
    _penalties(data)
    _stop(data)
    _integer(data, "logprobs", 0, 5)
    _boolean(data, "echo")
    _of_type(data, "suffix", (str,), "a string")


def _embeddings(data: dict[str, Any], limits: Limits) -> None:
    _embedding_input(data)
    _integer(data, "dimensions", 1, None)
    fmt = data.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise RequestRejected("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    _of_type(data, "user", (str,), "a string")


def _responses(data: dict[str, Any], limits: Limits) -> None:
    _responses_input(data)
    _integer(data, "max_output_tokens", 1, None)
    _sampling(data)
    _integer(data, "top_logprobs", 0, 20)
    _boolean(data, "parallel_tool_calls")
    _boolean(data, "store")
    _boolean(data, "background")
    _of_type(data, "instructions", (str,), "a string")
    _of_type(data, "tools", (list,), "an array of tool objects")


_BY_KIND = {CHAT: _chat, TEXT: _text, EMBEDDINGS: _embeddings, RESPONSES: _responses}


def check_request(data: Any, call_type: str, limits: Limits = Limits()) -> None:
    """Raise :class:`RequestRejected` naming the first field that is wrong; None if the request is fine.

    ``call_type`` is LiteLLM's (``acompletion``, ``aembedding``, ...); calls of other types are not checked.
    """
    kind = CALL_KINDS.get(call_type)
    if kind is None:
        return
    if not isinstance(data, dict):
        raise RequestRejected("request body must be a JSON object", None)
    _model(data)
    _BY_KIND[kind](data, limits)
