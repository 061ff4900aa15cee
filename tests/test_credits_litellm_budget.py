"""Our credits beside LiteLLM's own key budget (``max_budget`` on a virtual key).

LiteLLM checks a key's budget in auth, before any plugin hook, and (1.102.4 and 1.108.7 alike)
reserves the request's worst-case cost against it while the call runs; an exhausted budget answers
429 on 1.102.4 and 422 from 1.104 on. Our credits hold and charge in our own ledger. The two must
neither double-count (our charge is LiteLLM's ``response_cost`` once, whatever LiteLLM reserved) nor
mask each other (LiteLLM's refusal stays LiteLLM's, never our 402; our 402 leaves no LiteLLM
reservation behind that would refuse the key's next requests).

With ``custom_auth`` (our tests' stand-in for database keys; no LiteLLM database here) LiteLLM runs
its common checks and reservations only when ``general_settings.custom_auth_run_common_checks`` is
true, as this module's proxy sets. Even then it does not refuse an overspent key on 1.102.4 or
1.108.7: its key ``max_budget`` refusal lives in the database-key path. So what runs here is both
books side by side on one key; LiteLLM's 422/429 refusal itself is checked on its exception type
only (docs/litellm.md says what could not be tested end to end).
"""

from __future__ import annotations

import importlib.metadata
import math
import time
from decimal import ROUND_HALF_UP, Decimal

import litellm
import pytest
from packaging.version import Version

from tests.test_credits_e2e import (
    CREDITS, OTHERS_OFF, RATE, balance, chat, credits, db_fetch, expected_units, hold_units, settled, units_of)

BUDGET_STATUS = 429 if Version(importlib.metadata.version("litellm")) < Version("1.104") else 422


@pytest.fixture(scope="module")
def proxy(start_proxy, tmp_path_factory):
    spool = tmp_path_factory.mktemp("spool-budget")
    return start_proxy(plugins={**OTHERS_OFF, "credits": {**CREDITS, "spool_dir": str(spool)}},
                       overrides={"general_settings": {"custom_auth_run_common_checks": True}},
                       name="budget")


async def test_a_key_with_a_litellm_budget_is_charged_once_in_each_book(proxy, keys, fake, module_database):
    keys.add("sk-budget-both", user_id="budget-both", auth={"max_budget": 1.0, "spend": 0.25})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "two books, one call"}],
            "max_tokens": 20}
    r = chat(proxy, "sk-budget-both", body["model"], body["messages"][0]["content"], max_tokens=20)
    assert r.status_code == 200, r.text
    cost = Decimal(r.headers["x-litellm-response-cost"])
    want = expected_units("gpt-4o-mini", body)
    # ours: LiteLLM's response_cost, once, in credits; the hold is our own worst case only
    assert cost * RATE == Decimal(credits(want)) == Decimal(r.headers["x-litellm-plugins-credits-charged"])
    assert units_of(r.headers["x-litellm-plugins-credits-held"]) == hold_units("gpt-4o-mini", body)
    # LiteLLM's: the key's spend moved by the same cost, once (its reservation is not spend)
    assert r.headers["x-litellm-key-max-budget"] == "1.0"
    assert math.isclose(float(r.headers["x-litellm-key-spend"]), 0.25 + float(cost), rel_tol=0, abs_tol=1e-12)
    rows = await settled(module_database, "user:budget-both", 1)
    assert [row["delta"] for row in rows] == [-want]
    kinds = [row["kind"] for row in await db_fetch(
        module_database, "SELECT kind FROM credit_ledger WHERE account = 'user:budget-both' ORDER BY id")]
    assert kinds == ["grant", "hold", "settle"]
    b = balance(proxy, "sk-budget-both")
    assert units_of(b["balance"]) == 1000 * 1_000_000 - want and units_of(b["held"]) == 0


async def test_our_402_on_a_budgeted_key_stays_ours_and_leaves_nothing_reserved(proxy, keys, fake):
    # LiteLLM's budget is roomy, our credits are not: the refusal is our 402, and neither our hold
    # nor LiteLLM's reservation outlives it (the next call on the key is served and counted once)
    keys.add("sk-budget-poor", user_id="budget-poor", auth={"max_budget": 10_000.0, "spend": 0.0})
    for _ in range(3):
        r = chat(proxy, "sk-budget-poor", "claude-opus-4", "too big for my credits", max_tokens=1_000_000)
        assert r.status_code == 402, r.text
        assert r.json()["error"]["type"] == "insufficient_credits"
    assert fake.provider.calls == []
    r = chat(proxy, "sk-budget-poor", "gpt-4o-mini", "a small one", max_tokens=20)
    assert r.status_code == 200, r.text
    assert math.isclose(float(r.headers["x-litellm-key-spend"]), float(r.headers["x-litellm-response-cost"]),
                        rel_tol=0, abs_tol=1e-12)
    # The settle releases the hold from LiteLLM's success callback, which runs after the response
    # was sent: poll (a loaded CI machine answered held 0.000510 right after the 200).
    expected = 1000 * 1_000_000 - units_of(r.headers["x-litellm-plugins-credits-charged"])
    deadline = time.monotonic() + 10
    while True:
        b = balance(proxy, "sk-budget-poor")
        if (units_of(b["held"]), units_of(b["balance"])) == (0, expected) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert units_of(b["held"]) == 0
    assert units_of(b["balance"]) == expected


def test_litellm_leaves_an_overspent_custom_auth_key_to_us(proxy, keys, fake) -> None:
    """Tripwire for docs/litellm.md: in this mode LiteLLM serves a key past its max_budget, and we
    do not read LiteLLM's budget fields, so the call is served and charged by us as usual. If a
    release starts refusing here, this fails and the 422-vs-402 case can be tested end to end."""
    keys.add("sk-budget-spent", user_id="budget-spent", auth={"max_budget": 1.0, "spend": 2.0})
    r = chat(proxy, "sk-budget-spent", "gpt-4o-mini", "over budget", max_tokens=20)
    assert r.status_code == 200, r.text
    assert Decimal(r.headers["x-litellm-plugins-credits-charged"]) == \
        (Decimal(r.headers["x-litellm-response-cost"]) * RATE).quantize(Decimal("0.000001"), ROUND_HALF_UP)


def test_litellm_budget_refusal_status_is_its_own_not_ours() -> None:
    """1.104 moved LiteLLM's budget refusal from 429 to 422 (``litellm.budget_exceeded_status_code``);
    either way it is not our 402, and health counts 422 as a caller error, never a provider fault."""
    from litellm_plugins.health.service import CALLER_ERROR_STATUSES
    error = litellm.BudgetExceededError(current_cost=2.0, max_budget=1.0)
    assert error.status_code == BUDGET_STATUS != 402
    assert BUDGET_STATUS != 422 or BUDGET_STATUS in CALLER_ERROR_STATUSES
