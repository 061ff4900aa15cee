"""Credits behind power-level routing (both on, as in proxy_config.yaml): the hold and the charge use
the model group routing picked, and the usage row carries routing's facts from the shared context."""

from __future__ import annotations

import pytest

from tests.test_credits_e2e import CREDITS, credits, expected_units, settled, wait_for


@pytest.fixture(scope="module")
def proxy(start_proxy, tmp_path_factory):
    return start_proxy(plugins={"health": {"enabled": False}, "byok": {"enabled": False},
                                "credits": {**CREDITS, "spool_dir": str(tmp_path_factory.mktemp("rt-spool"))}})


async def test_power_level_request_is_charged_for_the_routed_group(proxy, keys, fake, module_database):
    keys.add("sk-routed", user_id="routed-user", metadata={"tier": "enterprise"})
    body = {"model": "balanced", "messages": [{"role": "user", "content": "route and bill me"}], "max_tokens": 12}
    with proxy.client("sk-routed") as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    usage = await wait_for(module_database, "SELECT * FROM usage_log WHERE account = 'user:routed-user'",
                           expect=lambda rows: len(rows) == 1)
    row = usage[0]
    assert row["power_level"] == "balanced" and row["requested_model"] == "balanced"
    group = row["model_group"]
    assert group and group != "balanced"
    want = expected_units(group, {**body, "model": group})
    rows = await settled(module_database, "user:routed-user", 1)
    assert [x["delta"] for x in rows] == [-want] and row["credits_charged"] == want
    assert r.headers["x-litellm-plugins-credits-charged"] == credits(want)
