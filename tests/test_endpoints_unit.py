"""Unit checks of what the Responses / Messages support reads from a request (no proxy)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from litellm_plugins.core import context
from litellm_plugins.credits.pricing import (METERED_CALLS, GroupPrice, estimate_prompt_tokens, requested_output_tokens,
                                             spends_nothing, worst_case_usd)
from litellm_plugins.routing.capabilities import REASONING, SCHEMA, TOOLS, VISION, needs_of

IMG = "data:image/png;base64,AAAA"


def test_responses_api_needs() -> None:
    assert needs_of({"input": "x" * 30}, 3.0).input_tokens == 11
    items = [{"role": "user", "content": [{"type": "input_text", "text": "y" * 30},
                                          {"type": "input_image", "image_url": IMG}]},
             {"type": "function_call_output", "call_id": "c", "output": "z" * 30}]
    needs = needs_of({"input": items, "instructions": "i" * 30, "max_output_tokens": 900}, 3.0)
    assert needs.caps == {VISION} and needs.input_tokens == 31 and needs.output_tokens == 900
    assert needs_of({"input": "x", "tools": [{"type": "function", "name": "f"}]}, 3.0).caps == {TOOLS}
    assert needs_of({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, 3.0).caps == {SCHEMA}
    assert needs_of({"input": "x", "text": {"format": {"type": "text"}}}, 3.0).caps == frozenset()
    assert needs_of({"input": "x", "reasoning": {"effort": "high"}}, 3.0).caps == {REASONING}
    assert needs_of({"input": "x", "reasoning": {"effort": None}}, 3.0).caps == frozenset()


def test_anthropic_messages_needs() -> None:
    body = {"system": [{"type": "text", "text": "s" * 30}], "max_tokens": 1000, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "q" * 30},
                                     {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": [{"type": "text", "text": "r" * 30}]}]}]}
    needs = needs_of(body, 3.0)
    assert needs.caps == {VISION} and needs.input_tokens == 31 and needs.output_tokens == 1000
    assert needs_of({"messages": [], "system": "x" * 30}, 3.0).input_tokens == 11
    assert needs_of({"messages": [], "tools": [{"name": "f", "input_schema": {}}]}, 3.0).caps == {TOOLS}
    assert needs_of({"messages": [], "thinking": {"type": "enabled", "budget_tokens": 10}}, 3.0).caps == {REASONING}
    assert needs_of({"messages": [], "thinking": {"type": "disabled"}}, 3.0).caps == frozenset()
    assert needs_of({"messages": [], "output_format": {"type": "json_schema", "schema": {}}}, 3.0).caps == {SCHEMA}


def test_hold_counts_each_apis_prompt_and_output_limit() -> None:
    price = GroupPrice(Decimal("0.000001"), Decimal("0.000002"), 8192)
    assert requested_output_tokens({"max_output_tokens": 50}) == 50
    assert requested_output_tokens({"max_tokens": 60}) == 60
    with_system = estimate_prompt_tokens({"messages": [], "system": "x" * 300}, 3.0)
    without = estimate_prompt_tokens({"messages": []}, 3.0)
    assert with_system - without == 100
    assert estimate_prompt_tokens({"input": "x" * 300, "instructions": "y" * 300}, 3.0) == 200 + 8
    # Responses API: max_output_tokens bounds the output; without it the model's limit does.
    assert worst_case_usd(price, {"input": "hi", "max_output_tokens": 10}, 3.0, 4096) == \
        Decimal("0.000001") * 9 + Decimal("0.000002") * 10
    assert worst_case_usd(price, {"input": "hi"}, 3.0, 4096) == Decimal("0.000001") * 9 + Decimal("0.000002") * 8192


def test_context_lives_where_litellm_keeps_its_metadata() -> None:
    responses = {"proxy_server_request": {"url": "http://proxy/v1/responses"}, "metadata": {"client": "x"},
                 "litellm_metadata": {"user_api_key_hash": "h"}}
    ctx = context.for_request(responses)
    assert responses["litellm_metadata"][context.CONTEXT_KEY] is ctx
    assert context.CONTEXT_KEY not in responses["metadata"]  # the provider-facing field stays the client's
    assert context.for_request(responses) is ctx and context.find(responses) is ctx
    assert context.litellm_metadata(responses) is responses["litellm_metadata"]
    messages = {"proxy_server_request": {"url": "http://proxy/v1/messages?beta=true"}}
    assert context.metadata_name(messages) == "litellm_metadata"
    chat = {"proxy_server_request": {"url": "http://files.example/v1/chat/completions"}, "metadata": {}}
    assert context.metadata_name(chat) == "metadata"  # the host name is not the route
    context.for_request(chat)
    assert isinstance(chat["metadata"][context.CONTEXT_KEY], context.RequestContext)
    # A client-forged context is never trusted, in either dict.
    forged = {"proxy_server_request": {"url": "http://proxy/v1/responses"},
              "litellm_metadata": {context.CONTEXT_KEY: {"byok_used": True}}}
    assert context.find(forged) is None
    assert context.for_request(forged) == {}
    # Logging kwargs: LiteLLM's litellm_params.metadata, or litellm_metadata on these routes.
    logged = {"litellm_params": {"metadata": {"client": 1}, "litellm_metadata": {context.CONTEXT_KEY: ctx}}}
    assert context.from_logging(logged) is ctx


def test_embeddings_hold_the_input_only() -> None:
    price = GroupPrice(Decimal("0.000001"), Decimal("0.000002"), 8192)
    data = {"input": "x" * 300}
    assert worst_case_usd(price, data, 3.0, 4096, input_only=True) == Decimal("0.000001") * 108
    assert worst_case_usd(price, data, 3.0, 4096) > Decimal("0.000001") * 108


@pytest.mark.parametrize(("call_type", "free"), [
    ("aget_responses", True), ("adelete_responses", True), ("alist_input_items", True), ("afile_list", True),
    ("afile_content", True), ("acancel_batch", True), ("aretrieve_batch", True), ("avideo_retrieve", True),
    ("acreate_batch", False), ("acreate_file", False), ("aimage_generation", False), ("aspeech", False),
    ("arerank", False), ("amoderation", False), ("anthropic_messages", False), ("acompact_responses", False),
    ("_arealtime", False), ("avector_store_search", False),
])
def test_call_types_that_run_no_model(call_type: str, free: bool) -> None:
    assert spends_nothing(call_type) is free
    assert not (free and call_type in METERED_CALLS)
