"""Billing export end to end: real proxies charge real chat calls; the ledger's charges reach a fake
billing receiver (Lago, OpenMeter, Stripe endpoints) through its faults — down, 5xx, a connection
dropped after accepting a batch, a proxy killed with -9 mid-export — exactly once after dedupe by id."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from decimal import Decimal

import pytest

from litellm_plugins.billing.exporters.webhook import signature
from tests.support.fake_billing import FakeBilling
from tests.support.proxy import MASTER_KEY
from tests.test_credits_e2e import CREDITS, OTHERS_OFF, chat, db_fetch, grant, plugins_cli, wait_for

UNIT = Decimal(1_000_000)
SECRETS = {"lago": "lago-test-secret-0001", "openmeter": "om-test-secret-0002",
           "stripe": "sk_test_stripe_secret_0003", "stale": "lago-test-secret-stale-0004",
           "ops": "whsec_" + base64.b64encode(b"ops-webhook-signing-key-0005").decode()}
ENV = {f"TEST_BILLING_{name.upper()}_KEY": secret for name, secret in SECRETS.items()}
STALE_AFTER_S = 8.64  # max_event_age_days 0.0001 of the "stale" exporter


def billing_settings(url: str) -> dict:
    def exporter(name: str, type_: str, **extra) -> dict:
        return {"name": name, "type": type_, "url": url, "api_key": f"os.environ/TEST_BILLING_{name.upper()}_KEY",
                **extra}
    return {"enabled": True, "poll_interval_seconds": 0.2, "retry_initial_seconds": 0.2,
            "retry_max_seconds": 1.0, "lease_ttl_seconds": 3, "request_timeout_seconds": 2,
            "usage_wait_seconds": 10, "outbox_retention_days": 0, "prune_interval_seconds": 1,
            "exporters": [exporter("lago", "lago", grant_code="credit_grant"), exporter("openmeter", "openmeter"),
                          exporter("stripe", "stripe"), exporter("stale", "lago", max_event_age_days=0.0001),
                          # low_balance below the starting grant: each account's first charge crosses it
                          {**exporter("ops", "webhook", events=["low_balance", "credits_exhausted"],
                                      low_balance_credits=1000),
                           "url": url + "/hooks/ops"}]}


@pytest.fixture(scope="module")
def start_billing_proxy(start_proxy, billing_receiver, tmp_path_factory):
    spool = tmp_path_factory.mktemp("spool")

    def start(name: str):
        return start_proxy(plugins={**OTHERS_OFF, "credits": {**CREDITS, "spool_dir": str(spool)},
                                    "billing": billing_settings(billing_receiver.url)}, name=name, env=ENV)
    return start


def bearer(name: str) -> str:
    return f"Bearer {SECRETS[name]}"


def received_credits(billing: FakeBilling, receiver: str, exporter: str, code: str = "llm_credits") -> dict[str, Decimal]:
    """id -> credits of the events one exporter delivered, after dedupe by id (the first copy)."""
    out: dict[str, Decimal] = {}
    for event_id, r in billing.unique(receiver, bearer(exporter)).items():
        if receiver == "lago" and r.body["code"] == code:
            out[event_id] = Decimal(r.body["properties"]["credits"])
        elif receiver == "openmeter" and r.body["type"] == code:
            out[event_id] = Decimal(r.body["data"]["credits"])
        elif receiver == "stripe" and r.body["event_name"] == code:
            out[event_id] = Decimal(r.body["payload[value]"])
    return out


async def ledger(dsn: str, kind: str) -> dict[str, Decimal]:
    """The ledger's own view: charge id (call id) or grant id ('ledger-<id>') -> credits."""
    if kind == "settle":
        rows = await db_fetch(dsn, "SELECT call_id AS id, amount FROM credit_ledger WHERE kind = 'settle'")
    else:
        rows = await db_fetch(dsn, "SELECT 'ledger-' || id AS id, delta AS amount FROM credit_ledger WHERE kind = 'grant'")
    return {r["id"]: Decimal(r["amount"]) / UNIT for r in rows}


async def until(check, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def calls(proxy, key: str, n: int, tag: str) -> list[str]:
    ids = []
    for i in range(n):
        r = chat(proxy, key, "gpt-4o-mini", f"{tag} request {i} " + "x" * i)
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-litellm-call-id"])
    return ids


async def settles_written(dsn: str, call_ids: list[str]) -> None:
    rows = await wait_for(dsn, "SELECT call_id FROM credit_ledger WHERE kind = 'settle' AND call_id = ANY($1)",
                          call_ids, expect=lambda rows: len(rows) == len(call_ids), timeout=30)
    assert len(rows) == len(call_ids)


def webhooks(billing: FakeBilling, type_: str, account: str | None = None) -> dict:
    """webhook-id -> the first copy of each ``type_`` webhook at /hooks/ops (for ``account``), after
    checking that every copy of them is signed with the exporter's secret."""
    out = {}
    for h in billing.events("webhook", "/hooks/ops"):
        body = h.body["json"]
        if body["type"] != type_ or account not in (None, body["data"]["account"]):
            continue
        assert h.body["signature"] == signature(SECRETS["ops"], h.event_id, int(h.body["timestamp"]), h.body["raw"])
        out.setdefault(h.event_id, h)
    return out


def ready_billing(proxy) -> dict:
    import httpx
    return httpx.get(proxy.url + "/plugins/ready", timeout=10).json()["billing"]


async def test_every_charge_arrives_once_after_dedupe_through_faults(start_billing_proxy, keys, fake, billing,
                                                                     billing_receiver, module_database):
    keys.add("sk-bill-a", user_id="bill-a")
    keys.add("sk-bill-b", team_id="bill-team-b")
    proxy = start_billing_proxy("billing-a")
    dsn = module_database

    # 1. receiver down: charges wait in the outbox (backlog on /plugins/ready), then drain
    billing_receiver.down()
    down_ids = calls(proxy, "sk-bill-a", 3, "down") + calls(proxy, "sk-bill-b", 2, "down")
    await settles_written(dsn, down_ids)
    await until(lambda: ready_billing(proxy)["lago"]["backlog"] >= len(down_ids), 30, "backlog on /plugins/ready")
    billing_receiver.up()
    # 2. 5xx answers, then 3. a batch accepted and its connection dropped (so it is sent again)
    billing.fail(503, 3)
    fault_ids = calls(proxy, "sk-bill-a", 3, "5xx")
    billing.drop_after_accept(2, bearer("lago"))
    fault_ids += calls(proxy, "sk-bill-b", 3, "drop")
    await settles_written(dsn, down_ids + fault_ids)
    every = set(down_ids + fault_ids)
    await until(lambda: every <= set(received_credits(billing, "lago", "lago")), 60, "lago to catch up")

    # 4. kill -9 mid-export: answers come late; kill once the receiver has recorded a new charge
    billing.delay = 1.5
    killed_ids = calls(proxy, "sk-bill-a", 3, "kill")
    await settles_written(dsn, killed_ids)
    await until(lambda: set(killed_ids) & set(received_credits(billing, "openmeter", "openmeter")), 30,
                "an export in flight")
    proxy.kill()
    billing.delay = 0.0
    after = start_billing_proxy("billing-a-restarted")
    charges = await ledger(dsn, "settle")
    grants = await ledger(dsn, "grant")
    assert set(down_ids + fault_ids + killed_ids) <= set(charges)
    for receiver_name in ("lago", "openmeter", "stripe"):
        await until(lambda: set(charges) <= set(received_credits(billing, receiver_name, receiver_name)), 60,
                    f"{receiver_name} to receive every charge")

    for receiver_name in ("lago", "openmeter", "stripe"):
        got = received_credits(billing, receiver_name, receiver_name)
        assert got == charges, receiver_name  # every charge once after dedupe, none missing, exact credits
        assert sum(got.values()) == sum(charges.values())
        copies = billing.events(receiver_name, bearer(receiver_name))
        for r in copies:  # a re-sent event is the same event
            assert r.body == billing.unique(receiver_name, bearer(receiver_name))[r.event_id].body
    lago_raw = [r.event_id for r in billing.events("lago", bearer("lago"))]
    assert len(lago_raw) > len(set(lago_raw)), "the dropped batches were sent again"
    assert received_credits(billing, "lago", "lago", "credit_grant") == grants  # starting grants, once each
    assert sum(grants.values()) == Decimal(1000) * 2
    one = billing.unique("lago", bearer("lago"))[killed_ids[0]].body
    assert one["external_subscription_id"] == "user:bill-a"  # the account id
    assert one["properties"]["model_group"] == "gpt-4o-mini" and one["properties"]["byok"] is False
    assert one["properties"]["prompt_tokens"] > 0 and Decimal(one["properties"]["cost_usd"]) > 0
    # operators' webhooks: one low_balance per account after dedupe, every copy signed with the secret
    await until(lambda: len(billing.unique("webhook", "/hooks/ops")) >= 2, 60, "low_balance webhooks")
    hooks = webhooks(billing, "low_balance")
    assert sorted(h.body["json"]["data"]["account"] for h in hooks.values()) == ["team:bill-team-b", "user:bill-a"]
    for h in hooks.values():
        assert h.event_id.split(":")[0] in charges and abs(int(h.body["timestamp"]) - time.time()) < 600
    # secrets never in logs or API output
    for p in (proxy, after):
        text = p.log_text()
        assert not any(secret in text for secret in SECRETS.values())
    with after.client(MASTER_KEY) as c:
        settings = c.get("/plugins/settings").text

    def lago_status() -> dict:
        with after.client(MASTER_KEY) as c:
            return c.get("/plugins/billing/status").json()["exporters"]["lago"]
    # events committed since the exporter's last poll (grants, webhooks) may still be on their way
    await until(lambda: lago_status()["backlog"] == 0, 60, "the lago exporter to drain")
    status = {"lago": lago_status()}
    assert not any(secret in settings for secret in SECRETS.values())
    assert status["lago"]["backlog"] == 0 and status["lago"]["exported"] >= len(charges) + len(grants)
    # acknowledged by every exporter: pruned from the outbox (retention 0 here), except what a dead letter needs
    kept = await wait_for(dsn, "SELECT o.event_id FROM billing_outbox o WHERE NOT EXISTS (SELECT 1 FROM "
                          "billing_dead_letters d WHERE d.seq = o.seq) AND o.event_id = ANY($1)",
                          list(charges), expect=lambda rows: not rows, timeout=30)
    assert kept == []


async def test_stale_event_is_dead_lettered_and_replays(start_billing_proxy, keys, fake, billing, billing_receiver,
                                                        module_database):
    keys.add("sk-bill-stale", user_id="bill-stale")
    keys.add("sk-bill-user", user_id="bill-user")
    proxy = start_billing_proxy("billing-stale")
    billing_receiver.down()
    ids = calls(proxy, "sk-bill-stale", 2, "stale")
    await settles_written(module_database, ids)
    time.sleep(STALE_AFTER_S + 1)  # older than the "stale" exporter accepts, while its receiver is down
    billing_receiver.up()
    await until(lambda: set(ids) <= set(received_credits(billing, "lago", "lago")), 60, "the other exporters")

    def dead(client) -> dict[str, dict]:
        r = client.get("/plugins/billing/dead-letters", params={"exporter": "stale"})
        assert r.status_code == 200, r.text
        return {e["event_id"]: e for e in r.json()["entries"]}

    with proxy.client(MASTER_KEY) as c:
        await until(lambda: set(ids) <= set(dead(c)), 30, "dead letters")
        letters = dead(c)
        assert {letters[i]["status"] for i in ids} == {"dead"}
        assert "older than" in letters[ids[0]]["reason"] and letters[ids[0]]["account"] == "user:bill-stale"
        assert not set(ids) & set(received_credits(billing, "lago", "stale"))
        await until(lambda: ready_billing(proxy)["stale"]["dead_letters"] >= 2, 15, "dead letters on /plugins/ready")
        with proxy.client("sk-bill-user") as user:  # admin only
            assert user.get("/plugins/billing/dead-letters").status_code == 403
            assert user.post("/plugins/billing/dead-letters/replay", json={"exporter": "stale"}).status_code == 403
        bad = c.post("/plugins/billing/dead-letters/replay", json={"exporter": "nope"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "exporter"
        bad = c.post("/plugins/billing/dead-letters/replay", json={"ids": ["x"]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "ids"
        r = c.post("/plugins/billing/dead-letters/replay", json={"ids": [letters[i]["id"] for i in ids]})
        assert r.status_code == 200 and r.json() == {"queued": 2}
        await until(lambda: set(ids) <= set(received_credits(billing, "lago", "stale")), 30, "the replay")
        charges = await ledger(module_database, "settle")
        assert {i: received_credits(billing, "lago", "stale")[i] for i in ids} == {i: charges[i] for i in ids}
        await until(lambda: {dead(c)[i]["status"] for i in ids} == {"replayed"}, 30, "replayed status")

    # the same from the CLI
    listed = plugins_cli(proxy, module_database, "billing", "dead-letters", "--exporter", "stale")
    assert listed.returncode == 0, listed.stderr
    assert {e["event_id"]: e["status"] for e in json.loads(listed.stdout) if e["event_id"] in ids} == \
        {i: "replayed" for i in ids}
    status = plugins_cli(proxy, module_database, "billing", "status")
    assert status.returncode == 0, status.stderr
    assert set(json.loads(status.stdout)) == {"lago", "openmeter", "stripe", "stale", "ops"}
    unknown = plugins_cli(proxy, module_database, "billing", "replay", "--exporter", "nope")
    assert unknown.returncode == 1 and "unknown exporter 'nope'" in unknown.stderr


async def test_the_customer_is_the_metadata_billing_customer_id_else_the_account(
        start_billing_proxy, keys, fake, billing, module_database):
    keys.add("sk-bill-cus-key", user_id="bill-cus-key", metadata={"billing_customer_id": "cus_KEY"},
             team_metadata={"billing_customer_id": "cus_TEAM"})
    keys.add("sk-bill-cus-team", team_id="bill-cus-team", team_metadata={"billing_customer_id": "cus_TEAM"})
    keys.add("sk-bill-cus-bad", user_id="bill-cus-bad", metadata={"billing_customer_id": "x" * 256})
    keys.add("sk-bill-cus-none", user_id="bill-cus-none")
    proxy = start_billing_proxy("billing-customer")
    expected = {"sk-bill-cus-key": "cus_KEY", "sk-bill-cus-team": "cus_TEAM",
                "sk-bill-cus-bad": "user:bill-cus-bad", "sk-bill-cus-none": "user:bill-cus-none"}
    ids = {key: calls(proxy, key, 1, "customer")[0] for key in expected}
    await settles_written(module_database, list(ids.values()))
    for receiver in ("lago", "openmeter", "stripe"):
        await until(lambda: set(ids.values()) <= set(received_credits(billing, receiver, receiver)), 60, receiver)
    lago = billing.unique("lago", bearer("lago"))
    openmeter = billing.unique("openmeter", bearer("openmeter"))
    stripe = billing.unique("stripe", bearer("stripe"))
    for key, customer in expected.items():
        call_id = ids[key]
        assert lago[call_id].body["external_subscription_id"] == customer, key
        assert openmeter[call_id].body["subject"] == customer, key
        assert stripe[call_id].body["payload[stripe_customer_id]"] == customer, key
        assert lago[call_id].body["properties"]["account"].startswith(("user:", "team:"))
    rows = await db_fetch(module_database, "SELECT call_id, billing_customer FROM usage_log WHERE call_id = ANY($1)",
                          list(ids.values()))
    assert {r["call_id"]: r["billing_customer"] for r in rows} == {
        ids["sk-bill-cus-key"]: "cus_KEY", ids["sk-bill-cus-team"]: "cus_TEAM",
        ids["sk-bill-cus-bad"]: None, ids["sk-bill-cus-none"]: None}
    assert proxy.log_text().count("metadata billing_customer_id ignored") == 1


async def test_credits_exhausted_fires_once_per_exhaustion(start_billing_proxy, keys, fake, billing, module_database):
    keys.add("sk-bill-broke", user_id="bill-broke")
    proxy = start_billing_proxy("billing-exhausted")
    account = "user:bill-broke"
    too_big = {"model": "claude-opus-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1_000_000}

    async def refused(n: int) -> None:
        with proxy.client("sk-bill-broke") as c:
            r = c.post("/v1/chat/completions", json=too_big)
        assert r.status_code == 402, r.text
        await wait_for(module_database, "SELECT id FROM usage_log WHERE account = $1", account,
                       expect=lambda rows: len(rows) == n, timeout=30)

    def exhausted() -> dict:
        return webhooks(billing, "credits_exhausted", account)

    await refused(1)
    await until(lambda: len(exhausted()) == 1, 60, "the first credits_exhausted webhook")
    await refused(2)  # no top-up in between: the same event, nothing more
    # (Not counted in billing_outbox: with retention 0 a delivered row is pruned within a second.)
    # Its usage row is committed, so an event of its own would be in the outbox by now; once the
    # exporter's backlog is empty again (/plugins/ready caches 5 s) it would have been delivered.
    await asyncio.sleep(6)
    await until(lambda: not ready_billing(proxy)["ops"]["backlog"], 30, "the ops exporter to drain")
    assert len(exhausted()) == 1
    r = grant(proxy, {"account": account, "amount": "1", "idempotency_key": "bill-broke-topup"})
    assert r.status_code == 200, r.text
    await refused(3)  # after a top-up: exhausted again, one more
    await until(lambda: len(exhausted()) == 2, 60, "the credits_exhausted webhook after the top-up")
    await until(lambda: not ready_billing(proxy)["ops"]["backlog"], 30, "the ops exporter to drain")
    hooks = sorted(exhausted().values(), key=lambda h: h.body["json"]["data"]["balance"])
    assert [h.body["json"]["data"]["balance"] for h in hooks] == ["1000.000000", "1001.000000"]
    calls_402 = await db_fetch(module_database, "SELECT call_id FROM usage_log WHERE account = $1 ORDER BY created_at",
                               account)
    assert [h.body["json"]["data"]["call_id"] for h in hooks] == [calls_402[0]["call_id"], calls_402[2]["call_id"]]
    assert all(h.event_id.endswith(":credits_exhausted") and h.body["json"]["data"]["requested_model"]
               for h in hooks)
