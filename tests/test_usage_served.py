"""Usage rows name what actually served the request (issue 16.7): after a fallback, the served model
group, deployment and provider -- and routing's first choice in its own column; the export agrees."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

FIRST = "deepinfra-llama-3.1-8b"       # eco's first candidate
SERVED = "groq-llama-3.1-8b"           # eco's second
FIRST_UPSTREAM = "meta-llama/Meta-Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def served(start_proxy, keys):
    keys.add("sk-served-user", user_id="served-user")  # tier free: eco
    # no cooldown / circuit in the way: every request tries the first choice, fails, falls back
    return start_proxy(name="served", overrides={"router_settings": {"allowed_fails": 1000}},
                       plugins={"health": {"enabled": True, "failure_threshold": 1000, "probe_enabled": False}})


def rows_of(proxy, key: str, count: int) -> list[dict]:
    deadline = time.time() + 20
    with proxy.client(key) as http:
        while True:
            rows = http.get("/plugins/usage").json()["rows"]
            if (len(rows) >= count and all(r["status"] == "success" for r in rows)) or time.time() > deadline:
                return rows
            time.sleep(0.2)


def test_a_fallback_records_the_served_group_deployment_and_provider(served, fake) -> None:
    fake.provider.fail(500, models={FIRST_UPSTREAM})
    served_ids = []
    with served.client("sk-served-user") as http:
        for stream in (False, True):
            response = http.post("/v1/chat/completions", json={
                "model": "eco", "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
            assert response.status_code == 200, response.text
            assert response.headers["x-litellm-plugins-model-group"] == SERVED
            served_ids.append(response.headers["x-litellm-model-id"])
    assert fake.provider.calls_to(FIRST_UPSTREAM), "the first choice was tried and failed"
    rows = rows_of(served, "sk-served-user", 2)
    assert len(rows) == 2
    assert [(r["status"], r["model_group"], r["provider"]) for r in rows] == [("success", SERVED, "groq")] * 2, rows
    assert [r.get("first_choice_group") for r in rows] == [FIRST, FIRST]
    assert sorted(r["deployment"] for r in rows) == sorted(served_ids)
    assert {r["stream"] for r in rows} == {True, False}

    with served.client() as http:  # the admin export says the same
        exported = json.loads(http.get("/plugins/usage/export", params={"format": "json"}).text)
        table = list(csv.DictReader(io.StringIO(http.get("/plugins/usage/export").text)))
    mine = {r["id"]: r for r in exported if r["user_id"] == "served-user"}
    assert {(r["model_group"], r["deployment"], r["provider"], r["first_choice_group"]) for r in mine.values()} == \
        {(SERVED, i, "groq", FIRST) for i in served_ids}
    csv_mine = [r for r in table if r["id"] in mine]
    assert {(r["model_group"], r["provider"], r["first_choice_group"]) for r in csv_mine} == {(SERVED, "groq", FIRST)}
