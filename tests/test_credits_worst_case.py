"""The worst case covers everything the provider may bill (issue 16, point 3): every completion of
``n`` (and ``best_of``), reasoning / audio output prices, long-context tiers, the web search fee.
Pure pricing first, then through the real proxy: an ``n: 4`` request a balance cannot cover is a 402
before any provider call, and concurrent ``n > 1`` requests never take a balance below zero."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest

from litellm_plugins.credits.pricing import (GroupPrice, build_price_table, completions_requested,
                                             estimate_prompt_tokens, worst_case_usd)
from tests.test_credits_e2e import OTHERS_OFF, balance, settled, units_of

MSG = {"messages": [{"role": "user", "content": "x" * 30}]}
PLAIN = GroupPrice(Decimal("0.000001"), Decimal("0.000002"), 100)


def prompt_cost(price: GroupPrice, data: dict) -> Decimal:
    return estimate_prompt_tokens(data, 3.0) * price.input_per_token


def test_n_multiplies_the_output_not_the_prompt():
    one = worst_case_usd(PLAIN, {**MSG, "max_tokens": 10}, 3.0, 4096)
    four = worst_case_usd(PLAIN, {**MSG, "max_tokens": 10, "n": 4}, 3.0, 4096)
    assert four - prompt_cost(PLAIN, MSG) == 4 * (one - prompt_cost(PLAIN, MSG)) == 4 * 10 * Decimal("0.000002")


def test_best_of_counts_every_candidate():
    assert completions_requested({"n": 2, "best_of": 5}) == 5
    assert completions_requested({"n": 3, "best_of": 1}) == 3
    assert completions_requested({"n": True, "best_of": "9"}) == 1  # not integers: the guard refuses them
    data = {"prompt": "x" * 30, "max_tokens": 10, "best_of": 5}
    assert worst_case_usd(PLAIN, data, 3.0, 4096) == prompt_cost(PLAIN, data) + 5 * 10 * Decimal("0.000002")


def test_reasoning_audio_tier_and_search_prices_are_covered():
    table = build_price_table([{"model_name": "m", "litellm_params": {
        "model": "openai/m", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002,
        "output_cost_per_reasoning_token": 0.000003, "output_cost_per_audio_token": 0.00002,
        "input_cost_per_token_above_200k_tokens": 0.000004, "output_cost_per_token_above_200k_tokens": 0.000005,
        "search_context_cost_per_query": {"search_context_size_low": 0.01, "search_context_size_high": 0.03}}}])
    price = table["m"]
    data = {**MSG, "max_tokens": 10}
    prompt = estimate_prompt_tokens(data, 3.0)
    # reasoning tokens are billed as output at their own (higher) price
    assert worst_case_usd(price, data, 3.0, 4096) == prompt * Decimal("0.000001") + 10 * Decimal("0.000003")
    # audio output only when asked for
    audio = {**data, "modalities": ["text", "audio"]}
    assert worst_case_usd(price, audio, 3.0, 4096) == prompt * Decimal("0.000001") + 10 * Decimal("0.00002")
    # past the long-context threshold both prices step up
    long = {"messages": [{"role": "user", "content": "x" * 700_000}], "max_tokens": 10}
    big = estimate_prompt_tokens(long, 3.0)
    assert big > 200_000
    assert worst_case_usd(price, long, 3.0, 4096) == big * Decimal("0.000004") + 10 * Decimal("0.000005")
    # web search: the most expensive per-call fee
    search = {**data, "web_search_options": {}}
    assert worst_case_usd(price, search, 3.0, 4096) == worst_case_usd(price, data, 3.0, 4096) + Decimal("0.03")


# ---- through the proxy ------------------------------------------------------------------------------
# gpt-4o: 0.0000025 / 0.00001 USD per token; 100 credits per USD -> 250 / 1000 units per token.
# Prompt "hi": estimated 13 tokens (3250 units). n=1, max_tokens 8: 11250 units; n=4: 35250.
STARTING = Decimal("0.02")  # 20000 units: one n=1 hold fits, one n=4 hold does not


@pytest.fixture(scope="module")
def proxy(start_proxy, tmp_path_factory):
    return start_proxy(plugins={**OTHERS_OFF, "credits": {
        "enabled": True, "starting_grant": float(STARTING), "credits_per_usd": 100,
        "writer_interval_seconds": 0.2, "spool_dir": str(tmp_path_factory.mktemp("spool"))}})


def body(**extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_n4_beyond_the_balance_is_402_and_never_reaches_the_provider(proxy, keys, fake):
    keys.add("sk-n4", user_id="n4")
    with proxy.client("sk-n4") as c:
        r = c.post("/v1/chat/completions", json=body(max_tokens=8, n=4))
        assert r.status_code == 402, r.text
        assert r.json()["error"]["type"] == "insufficient_credits"
        assert not fake.provider.calls
        assert units_of(balance(proxy, "sk-n4")["held"]) == 0
        ok = c.post("/v1/chat/completions", json=body(max_tokens=8))  # the same balance covers n=1
        assert ok.status_code == 200, ok.text


async def test_concurrent_n_requests_never_take_the_balance_below_zero(proxy, keys, fake, module_database):
    keys.add("sk-nconc", user_id="nconc")
    # n=4, max_tokens 2: hold 3250 + 4*2*1000 = 11250 units; each call is billed 4*2 completion tokens
    # (8250 units with its 1-token prompt). Holding for one choice (5250) let three in at once: -4750.
    async with httpx.AsyncClient(base_url=proxy.url, headers={"Authorization": "Bearer sk-nconc"},
                                 timeout=30) as client:
        fake.provider.set_delay(0.5)  # all in flight together
        answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=body(max_tokens=2, n=4))
                                         for _ in range(6)))
    statuses = sorted(r.status_code for r in answers)
    served = statuses.count(200)
    assert served >= 1 and set(statuses) <= {200, 402}, statuses
    await settled(module_database, "user:nconc", served)
    final = balance(proxy, "sk-nconc")
    assert units_of(final["balance"]) >= 0, final
    assert units_of(final["balance"]) == int(STARTING * 1_000_000) - served * 8250
