"""Usage log through the real proxy: rows written by real requests, filters, streamed export, summaries,
non-admin isolation, and the CLI export."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

from datetime import datetime, timezone
from decimal import Decimal

import asyncpg
import pytest

from tests.support.proxy import MASTER_KEY
from tests.test_credits_e2e import CREDITS, OTHERS_OFF, wait_for


def T(day: str) -> datetime:
    return datetime.fromisoformat(day + "T10:00:00").replace(tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def proxy(start_proxy, tmp_path_factory):
    return start_proxy(plugins={**OTHERS_OFF, "credits": {**CREDITS,
                                                          "spool_dir": str(tmp_path_factory.mktemp("usage-spool"))}})


@pytest.fixture(scope="module")
async def seeded(proxy, keys, fake_server, module_database):
    keys.add("sk-u1", user_id="u1")
    keys.add("sk-u2", user_id="u2")
    for key, model in (("sk-u1", "gpt-4o-mini"), ("sk-u1", "gpt-4o"), ("sk-u2", "gpt-4o-mini")):
        with proxy.client(key) as c:
            r = c.post("/v1/chat/completions", json={"model": model, "max_tokens": 5,
                                                      "messages": [{"role": "user", "content": "usage please"}]})
            assert r.status_code == 200, r.text
    with proxy.client("sk-u2") as c:  # a rejection leaves a row too
        assert c.post("/v1/chat/completions", json={"model": "claude-opus-4", "max_tokens": 10_000_000,
                                                    "messages": [{"role": "user", "content": "x"}]}).status_code == 402
    await wait_for(module_database, "SELECT id FROM usage_log", expect=lambda rows: len(rows) == 4)
    # rows as routing/BYOK would have produced them (those capabilities are off in this module)
    conn = await asyncpg.connect(module_database, server_settings={"search_path": "litellm_plugins"})
    try:
        await conn.executemany(
            "INSERT INTO usage_log (id, call_id, account, user_id, power_level, model_group, provider, byok, "
            "prompt_tokens, completion_tokens, cost_usd, credits_charged, latency_ms, status, created_at) "
            "VALUES ($1, $1, 'user:u1', 'u1', $2, $3, $4, $5, 10, 5, $6, $7, 12, 'success', $8::timestamptz)",
            [("seed-1", "eco", "groq-llama-3.1-8b", "groq", False, Decimal('0.000001'), 100, T("2026-01-01")),
             ("seed-2", "precision", "claude-opus-4", "anthropic", True, Decimal(0), 0, T("2026-01-02")),
             ("seed-3", "eco", "groq-llama-3.1-8b", "groq", False, Decimal('0.000002'), 200, T("2026-01-03"))])
    finally:
        await conn.close()
    return proxy


def get(proxy, path, key=MASTER_KEY, **params):
    with proxy.client(key) as c:
        return c.get(path, params=params)


def ids(response) -> set[str]:
    assert response.status_code == 200, response.text
    return {r["id"] for r in response.json()["rows"]}


def test_real_requests_leave_rows_with_all_fields(seeded):
    rows = get(seeded, "/plugins/usage", account="user:u1", status="success").json()["rows"]
    real = [r for r in rows if not r["id"].startswith("seed")]
    assert {r["model_group"] for r in real} == {"gpt-4o-mini", "gpt-4o"}
    for r in real:
        assert r["provider"] == "openai" and r["byok"] is False and r["stream"] is False
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] == 5 and r["latency_ms"] is not None
        assert r["cost_usd"] != "0" and r["credits_charged"] != "0.000000" and r["key_hash"]
        assert r["requested_model"] == r["model_group"] and r["team_id"] is None and r["user_id"] == "u1"
    rejected = get(seeded, "/plugins/usage", status="rejected").json()["rows"]
    assert [(r["account"], r["error_type"], r["credits_charged"]) for r in rejected] == [
        ("user:u2", "insufficient_credits", "0.000000")]


def test_filters(seeded):
    assert ids(get(seeded, "/plugins/usage", power_level="eco")) == {"seed-1", "seed-3"}
    assert ids(get(seeded, "/plugins/usage", byok="true")) == {"seed-2"}
    assert ids(get(seeded, "/plugins/usage", model="groq-llama-3.1-8b")) == {"seed-1", "seed-3"}
    assert ids(get(seeded, "/plugins/usage", **{"from": "2026-01-02T00:00:00Z", "to": "2026-01-03T00:00:00Z"})) == {"seed-2"}
    assert len(ids(get(seeded, "/plugins/usage", byok="false"))) == 6
    for params, param in (({"from": "yesterday"}, "from"), ({"byok": "maybe"}, "byok"), ({"status": "odd"}, "status"),
                          ({"from": "2026-02-01", "to": "2026-01-01"}, "from")):
        r = get(seeded, "/plugins/usage", **params)
        assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_non_admin_sees_only_own(seeded):
    assert all(r["account"] == "user:u2" for r in get(seeded, "/plugins/usage", key="sk-u2").json()["rows"])
    assert len(ids(get(seeded, "/plugins/usage", key="sk-u2"))) == 2
    assert get(seeded, "/plugins/usage", key="sk-u2", account="user:u1").status_code == 403
    assert get(seeded, "/plugins/usage/export", key="sk-u2", account="user:u1").status_code == 403
    summary = get(seeded, "/plugins/usage/summary", key="sk-u2", by="account").json()["groups"]
    assert [g["account"] for g in summary] == ["user:u2"]


def test_export_csv_and_json_stream(seeded):
    with seeded.client(MASTER_KEY) as c:
        with c.stream("GET", "/plugins/usage/export", params={"format": "csv", "account": "user:u1"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
            assert "content-length" not in r.headers  # streamed, not built in memory
            text = "".join(r.iter_text())
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 5 and {row["account"] for row in table} == {"user:u1"}
    assert [row["id"] for row in table][:3] == ["seed-1", "seed-2", "seed-3"]  # oldest first
    r = get(seeded, "/plugins/usage/export", format="json", power_level="eco")
    assert [row["id"] for row in json.loads(r.text)] == ["seed-1", "seed-3"]
    assert json.loads(r.text)[1]["cost_usd"] == "0.000002" and json.loads(r.text)[1]["credits_charged"] == "0.000200"
    assert get(seeded, "/plugins/usage/export", format="xml").status_code == 400


def test_summaries(seeded):
    by_provider = {g["provider"]: g for g in get(seeded, "/plugins/usage/summary", by="provider").json()["groups"]}
    assert by_provider["groq"]["requests"] == 2 and by_provider["groq"]["cost_usd"] == "0.000003"
    assert by_provider["groq"]["credits_charged"] == "0.000300" and by_provider["groq"]["prompt_tokens"] == 20
    assert by_provider["openai"]["requests"] == 3 and by_provider["openai"]["succeeded"] == 3
    by_level = {g["power_level"]: g["requests"] for g in
                get(seeded, "/plugins/usage/summary", by="power_level").json()["groups"]}
    assert by_level == {"eco": 2, "precision": 1, None: 4}
    by_model = {g["model"]: g["requests"] for g in get(seeded, "/plugins/usage/summary", by="model").json()["groups"]}
    assert by_model["gpt-4o-mini"] == 2 and by_model["claude-opus-4"] == 2
    assert get(seeded, "/plugins/usage/summary", by="colour").status_code == 400


def test_cli_usage_export(seeded, module_database, tmp_path):
    out = tmp_path / "usage.csv"
    env = {**seeded.process_env(), "LITELLM_PLUGINS_DATABASE_URL": module_database}
    r = subprocess.run([sys.executable, "-m", "litellm_plugins.cli", "--config", str(seeded.config_path), "usage",
                        "export", "--format", "csv", "--power-level", "eco", "--output", str(out)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "exported 2 row(s)" in r.stderr
    assert [row["id"] for row in csv.DictReader(out.open())] == ["seed-1", "seed-3"]
