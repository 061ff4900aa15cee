"""Worst-case price of a request, computed before the provider is called.

Prices come from the deployment's ``litellm_params`` (``input_cost_per_token`` /
``output_cost_per_token``, the same numbers LiteLLM's ``response_cost`` uses), else from LiteLLM's
cost map; with several deployments in a group we take the most expensive, since the router may
pick any. The table is built once per worker (config is static), so the hot path is dict lookups.

Prompt tokens are *estimated* from UTF-8 bytes (``bytes / prompt_bytes_per_token`` + per-message
overhead), not tokenised: tiktoken costs tens to hundreds of microseconds per request and the
hold only has to be an upper bound of the usual case (the settle charges the real cost anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from litellm_plugins.credits.money import to_decimal

MESSAGE_OVERHEAD_TOKENS = 4
REQUEST_OVERHEAD_TOKENS = 8


@dataclass(frozen=True)
class GroupPrice:
    input_per_token: Decimal
    output_per_token: Decimal
    max_output_tokens: int | None


def _cost_map_entry(model: str) -> dict[str, Any]:
    try:
        import litellm

        cost_map = litellm.model_cost
        entry = cost_map.get(model)
        if entry is None and "/" in model:
            entry = cost_map.get(model.split("/", 1)[1])
        return entry or {}
    except Exception:  # noqa: BLE001 - an unknown model simply has no list price
        return {}


def _price(params: dict[str, Any], info: dict[str, Any], key: str) -> Decimal:
    value = params.get(key, info.get(key))
    if value is None:
        value = _cost_map_entry(str(params.get("model", ""))).get(key)
    try:
        return to_decimal(value) if value is not None else Decimal(0)
    except Exception:  # noqa: BLE001
        return Decimal(0)


def build_price_table(model_list: list[dict[str, Any]]) -> dict[str, GroupPrice]:
    table: dict[str, GroupPrice] = {}
    for entry in model_list or []:
        name = entry.get("model_name")
        if not name:
            continue
        params = entry.get("litellm_params") or {}
        info = entry.get("model_info") or {}
        inp = _price(params, info, "input_cost_per_token")
        out = _price(params, info, "output_cost_per_token")
        max_out = info.get("max_output_tokens") or _cost_map_entry(str(params.get("model", ""))).get(
            "max_output_tokens")
        prev = table.get(name)
        if prev is not None:
            inp, out = max(inp, prev.input_per_token), max(out, prev.output_per_token)
            if prev.max_output_tokens and max_out:
                max_out = max(int(max_out), prev.max_output_tokens)
            else:
                max_out = max_out or prev.max_output_tokens
        table[name] = GroupPrice(inp, out, int(max_out) if max_out else None)
    return table


def _text_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8")) if not value.isascii() else len(value)
    if isinstance(value, list):
        return sum(_text_bytes(v) for v in value)
    if isinstance(value, dict):
        # content parts ({"type": "text", "text": ...}), tool calls, images (counted by their url)
        return sum(_text_bytes(v) for k, v in value.items() if k != "type")
    return 0


def estimate_prompt_tokens(data: dict[str, Any], bytes_per_token: float) -> int:
    messages = data.get("messages")
    total = 0
    count = 0
    if isinstance(messages, list):
        for message in messages:
            count += 1
            total += _text_bytes(message.get("content") if isinstance(message, dict) else message)
            if isinstance(message, dict) and message.get("tool_calls"):
                total += _text_bytes(message["tool_calls"])
    for key in ("prompt", "input", "tools", "functions"):
        if key in data:
            total += _text_bytes(data[key])
    return math.ceil(total / bytes_per_token) + count * MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS


def requested_output_tokens(data: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def request_groups(data: dict[str, Any]) -> list[str]:
    """The model group a request goes to first, then every group its per-request fallbacks may reach.

    The hold must cover the most expensive of them: routing and BYOK put same-level candidates in
    ``data["fallbacks"]`` (as names, ``{"model": name}`` entries, or ``{group: [names]}`` maps), and
    a fallback can cost more than the first choice.
    """
    groups = [str(data.get("model") or "")]
    for entry in data.get("fallbacks") or ():
        if isinstance(entry, str):
            groups.append(entry)
        elif isinstance(entry, dict):
            if isinstance(entry.get("model"), str):
                groups.append(entry["model"])
            else:
                for names in entry.values():
                    groups.extend(n for n in (names if isinstance(names, list) else [names]) if isinstance(n, str))
    return list(dict.fromkeys(groups))


def worst_case_usd(price: GroupPrice | None, data: dict[str, Any], bytes_per_token: float,
                   default_max_output: int) -> Decimal:
    if price is None:
        return Decimal(0)
    prompt = estimate_prompt_tokens(data, bytes_per_token)
    output = requested_output_tokens(data) or price.max_output_tokens or default_max_output
    return prompt * price.input_per_token + output * price.output_per_token
