"""Worst-case price of a request, computed before the provider is called.

Prices come from the deployment's ``litellm_params`` (``input_cost_per_token`` /
``output_cost_per_token``, the same numbers LiteLLM's ``response_cost`` uses), else from LiteLLM's
cost map; with several deployments in a group we take the most expensive, since the router may
pick any. The table is built once per worker (config is static), so the hot path is dict lookups.

What the worst case covers (issue 16): every completion the request asks for -- ``n`` choices, and
for a text completion ``best_of`` candidates (each generated and billed, the prompt once); the
highest per-token output price that can apply: reasoning tokens (billed as output; counted inside
``max_completion_tokens`` by OpenAI and inside ``max_tokens`` by Anthropic's ``budget_tokens``, so the
output budget already bounds them), audio output when the request asks for audio, and the
long-context tier (``*_above_<N>k_tokens``) when the estimated prompt reaches it; and the per-call web
search fee when ``web_search_options`` is set. What it does not cover is documented in
docs/credits.md ("Worst case"); the settle charges LiteLLM's real cost whatever the hold was.

Prompt tokens are *estimated* from UTF-8 bytes (``bytes / prompt_bytes_per_token`` + per-message
overhead), not tokenised: tiktoken costs tens to hundreds of microseconds per request and the
hold only has to be an upper bound of the usual case (the settle charges the real cost anyway).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from litellm_plugins.credits.money import to_decimal

MESSAGE_OVERHEAD_TOKENS = 4
REQUEST_OVERHEAD_TOKENS = 8


TIER_RE = re.compile(r"^(input|output)_cost_per_token_above_(\d+)k_tokens$")


@dataclass(frozen=True)
class GroupPrice:
    input_per_token: Decimal
    output_per_token: Decimal  # the higher of the text and reasoning output prices
    max_output_tokens: int | None
    audio_output_per_token: Decimal = Decimal(0)
    # (prompt tokens from which it applies, input price, output price), lowest threshold first
    tiers: tuple[tuple[int, Decimal, Decimal], ...] = field(default=())
    web_search_per_call: Decimal = Decimal(0)

    def at(self, prompt_tokens: int) -> tuple[Decimal, Decimal]:
        """Input and output price per token for a prompt of this size (long-context tiers)."""
        inp, out = self.input_per_token, self.output_per_token
        for threshold, tier_in, tier_out in self.tiers:
            if prompt_tokens > threshold:
                inp, out = max(inp, tier_in), max(out, tier_out)
        return inp, out


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


def _decimal_or_zero(value: Any) -> Decimal:
    try:
        return to_decimal(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else Decimal(0)
    except Exception:  # noqa: BLE001
        return Decimal(0)


def _extras(params: dict[str, Any], info: dict[str, Any], inp: Decimal, out: Decimal) -> GroupPrice:
    """The prices beyond the plain per-token pair: from the deployment, else LiteLLM's cost map."""
    listed = {**_cost_map_entry(str(params.get("model", ""))), **info, **params}
    out = max(out, _decimal_or_zero(listed.get("output_cost_per_reasoning_token")))
    audio = _decimal_or_zero(listed.get("output_cost_per_audio_token"))
    tiers: dict[int, list[Decimal]] = {}
    for key, value in listed.items():
        match = TIER_RE.match(key)
        if match:
            prices = tiers.setdefault(int(match.group(2)) * 1000, [inp, out])
            prices[0 if match.group(1) == "input" else 1] = _decimal_or_zero(value)
    search = listed.get("search_context_cost_per_query")
    per_call = max((_decimal_or_zero(v) for v in search.values()), default=Decimal(0)) \
        if isinstance(search, dict) else Decimal(0)
    return GroupPrice(inp, out, None, audio, tuple((t, p[0], p[1]) for t, p in sorted(tiers.items())), per_call)


def _merge(prev: GroupPrice, new: GroupPrice) -> GroupPrice:
    """Several deployments in a group: the router may pick any, so each price is the highest."""
    if prev.max_output_tokens and new.max_output_tokens:
        max_out: int | None = max(new.max_output_tokens, prev.max_output_tokens)
    else:
        max_out = new.max_output_tokens or prev.max_output_tokens
    tiers = {t: (i, o) for t, i, o in prev.tiers}
    for t, i, o in new.tiers:
        old = tiers.get(t, (i, o))
        tiers[t] = (max(i, old[0]), max(o, old[1]))
    return GroupPrice(max(prev.input_per_token, new.input_per_token), max(prev.output_per_token, new.output_per_token),
                      max_out, max(prev.audio_output_per_token, new.audio_output_per_token),
                      tuple((t, i, o) for t, (i, o) in sorted(tiers.items())),
                      max(prev.web_search_per_call, new.web_search_per_call))


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
        extras = _extras(params, info, inp, out)
        price = GroupPrice(extras.input_per_token, extras.output_per_token, int(max_out) if max_out else None,
                           extras.audio_output_per_token, extras.tiers, extras.web_search_per_call)
        prev = table.get(name)
        table[name] = price if prev is None else _merge(prev, price)
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
    # text completions' prompt; Responses API input items + instructions; Anthropic's system
    for key in ("prompt", "input", "instructions", "system", "tools", "functions"):
        if key in data:
            total += _text_bytes(data[key])
    return math.ceil(total / bytes_per_token) + count * MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


def completions_requested(data: dict[str, Any]) -> int:
    """How many completions the provider generates and bills: ``n``, or ``best_of`` when larger
    (text completions generate ``best_of`` candidates and return the best ``n``)."""
    return max(_count(data.get("n")), _count(data.get("best_of")))


def wants_audio(data: dict[str, Any]) -> bool:
    modalities = data.get("modalities")
    return bool(data.get("audio")) or (isinstance(modalities, list) and "audio" in modalities)


def requested_output_tokens(data: dict[str, Any]) -> int | None:
    """Each API's own output limit: chat's ``max_completion_tokens`` / ``max_tokens``, Anthropic
    Messages' ``max_tokens`` (required there), the Responses API's ``max_output_tokens``."""
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


# Calls that produce no output tokens: their hold is the input only (an embedding deployment priced
# with an output price would otherwise hold default_max_output_tokens of it).
INPUT_ONLY_CALLS = frozenset({"aembedding", "embedding", "embeddings"})

# LiteLLM call types whose hold and settle are verified end to end (README "Endpoints"): chat, text
# completions, the Responses API, Anthropic's Messages API, embeddings.
METERED_CALLS = frozenset({"acompletion", "completion", "atext_completion", "text_completion", "aresponses",
                           "responses", "anthropic_messages", "aanthropic_messages", "aembedding", "embedding"})
METERED_ROUTES = "/v1/chat/completions, /v1/completions, /v1/responses, /v1/messages and /v1/embeddings"
# Call types that only read, list, cancel or delete what a caller already has: no model runs, so
# there is nothing to hold or charge, whatever ``other_endpoints`` says.
_NO_SPEND = ("get_", "delete_", "list_", "retrieve_", "cancel_", "file_retrieve", "file_delete", "file_list",
             "file_content", "video_retrieve", "video_content", "video_list", "video_delete", "video_get_",
             "vector_store_file_list", "vector_store_file_retrieve", "vector_store_file_content",
             "vector_store_file_delete", "list_input_items")


def spends_nothing(call_type: str) -> bool:
    """True for a call type that runs no model (``aget_responses``, ``afile_list``, ``acancel_batch``...)."""
    name = call_type[1:] if call_type.startswith("a") and not call_type.startswith("anthropic") else call_type
    return name.startswith(_NO_SPEND)


def worst_case_usd(price: GroupPrice | None, data: dict[str, Any], bytes_per_token: float,
                   default_max_output: int, input_only: bool = False) -> Decimal:
    if price is None:
        return Decimal(0)
    prompt = estimate_prompt_tokens(data, bytes_per_token)
    if input_only:
        return prompt * price.at(prompt)[0]
    output = requested_output_tokens(data) or price.max_output_tokens or default_max_output
    inp, out = price.at(prompt)
    if price.audio_output_per_token and wants_audio(data):
        out = max(out, price.audio_output_per_token)
    total = prompt * inp + output * out * completions_requested(data)
    if price.web_search_per_call and data.get("web_search_options") is not None:
        total += price.web_search_per_call
    return total
