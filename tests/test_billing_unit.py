"""Billing export without a proxy: the receivers' request shapes, the exporters against the fake
receiver over loopback HTTP, settings, backoff, and the outbox trigger in a real migrated database."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import httpx
import pytest

from litellm_plugins.billing import store
from litellm_plugins.billing.exporters import DeliveryError, build
from litellm_plugins.billing.exporters.lago import event_body
from litellm_plugins.billing.exporters.openmeter import cloud_event
from litellm_plugins.billing.exporters.stripe import form
from litellm_plugins.billing.exporters.webhook import message, signature
from litellm_plugins.billing.settings import BillingSettings, ExporterSettings
from litellm_plugins.billing.worker import backoff
from litellm_plugins.core import identity
from litellm_plugins.core.identity import billing_customer
from litellm_plugins.core.migrator import migrate
from litellm_plugins.core.settings import SettingsError, parse_settings
from litellm_plugins.credits.money import fmt
from tests.support.fake_billing import FakeBilling, FakeBillingServer
from tests.test_core_settings import VALID

AT = datetime(2026, 12, 1, 12, 30, 15, tzinfo=timezone.utc)
CHARGE = store.Event(seq=7, txid=100, event_id="call-1", account="user:alice", kind="charge", units=1_234_567,
                     created_at=AT, has_usage=True, model_group="gpt-4o-mini", power_level="eco", byok=False,
                     prompt_tokens=12, completion_tokens=8, cost_usd=Decimal("0.0123456700"))
GRANT = store.Event(seq=8, txid=101, event_id="ledger-42", account="user:alice", kind="grant",
                    units=1000 * 1_000_000, created_at=AT)


def exporter_settings(type_: str, **extra) -> ExporterSettings:
    return ExporterSettings(name=f"{type_}-test", type=type_, api_key=f"secret-{type_}-1234", **extra)


# ---- request shapes (the vendors' documented fields) ------------------------------------------------
def test_lago_event_is_the_documented_batch_item() -> None:
    assert event_body(CHARGE, "llm_credits") == {
        "transaction_id": "call-1", "external_subscription_id": "user:alice", "code": "llm_credits",
        "timestamp": int(AT.timestamp()),
        "properties": {"credits": "1.234567", "account": "user:alice", "kind": "charge", "cost_usd": "0.01234567",
                       "prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20,
                       "model_group": "gpt-4o-mini", "power_level": "eco", "byok": False}}
    grant = event_body(GRANT, "credit_grant")
    assert grant["transaction_id"] == "ledger-42"
    assert grant["properties"] == {"credits": "1000.000000", "account": "user:alice", "kind": "grant"}


def test_openmeter_event_is_a_cloudevent() -> None:
    event = cloud_event(CHARGE, "llm_credits", "my-proxy")
    assert {k: v for k, v in event.items() if k != "data"} == {
        "specversion": "1.0", "id": "call-1", "source": "my-proxy", "type": "llm_credits",
        "subject": "user:alice", "time": "2026-12-01T12:30:15Z", "datacontenttype": "application/json"}
    assert event["data"]["credits"] == "1.234567" and event["data"]["total_tokens"] == 20


def test_stripe_meter_event_form() -> None:
    assert form(CHARGE, "llm_credits") == {
        "event_name": "llm_credits", "identifier": "call-1", "timestamp": str(int(AT.timestamp())),
        "payload[stripe_customer_id]": "user:alice", "payload[value]": "1.234567"}


def test_every_receiver_uses_the_recorded_billing_customer() -> None:
    charge = replace(CHARGE, billing_customer="cus_ACME")
    assert event_body(charge, "c")["external_subscription_id"] == "cus_ACME"
    assert cloud_event(charge, "c", "s")["subject"] == "cus_ACME"
    assert form(charge, "c")["payload[stripe_customer_id]"] == "cus_ACME"
    assert event_body(charge, "c")["properties"]["account"] == "user:alice"  # the account stays a property
    assert CHARGE.customer == GRANT.customer == "user:alice"  # none recorded: the account id


@pytest.mark.parametrize(("key_meta", "team_meta", "expected"), [
    ({"billing_customer_id": "cus_key"}, {"billing_customer_id": "cus_team"}, "cus_key"),
    ({}, {"billing_customer_id": "cus_team"}, "cus_team"),
    ({"billing_customer_id": ""}, {"billing_customer_id": "cus_team"}, "cus_team"),
    ({"billing_customer_id": 42}, {}, None),  # not a string: ignored
    ({"billing_customer_id": ["cus_x"]}, {"billing_customer_id": "cus_team"}, "cus_team"),
    ({"billing_customer_id": "x" * 256}, {}, None),  # too long: ignored
    ({"billing_customer_id": "x" * 255}, {}, "x" * 255),
    ({}, {}, None),
])
def test_billing_customer_comes_from_key_then_team_metadata(key_meta: dict, team_meta: dict,
                                                            expected: str | None) -> None:
    assert billing_customer(key_meta, team_meta) == expected


def test_an_invalid_billing_customer_is_logged_once_without_its_value(caplog: pytest.LogCaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "_warned_billing_customer", [False])
    with caplog.at_level(logging.WARNING, logger="litellm_plugins.identity"):
        for _ in range(3):
            assert billing_customer({"billing_customer_id": {"secret": "s3cr3t"}}, {}) is None
    warnings = [r for r in caplog.records if "billing_customer_id" in r.getMessage()]
    assert len(warnings) == 1 and "s3cr3t" not in warnings[0].getMessage()


# ---- exporters against the fake receiver ---------------------------------------------------------------
def events(n: int, start: int = 0) -> list[store.Event]:
    return [store.Event(seq=i, txid=i, event_id=f"call-{i}", account="user:bob", kind="charge", units=i,
                        created_at=AT) for i in range(start, start + n)]


@pytest.mark.parametrize(("type_", "stored"), [("lago", 4), ("stripe", 4), ("openmeter", 7)])
async def test_exporter_delivers_with_its_key_and_known_ids_count_as_delivered(
        type_: str, stored: int, billing_receiver: FakeBillingServer, billing: FakeBilling) -> None:
    """OpenMeter takes a known id again and dedupes it itself; Lago and Stripe refuse it (strict)."""
    exporter = build(exporter_settings(type_, url=billing_receiver.url))
    receiver_name = type_
    async with httpx.AsyncClient() as client:
        await exporter.send(client, events(3))
        billing.strict = True  # a re-sent batch with known ids: refused as duplicates by Lago / Stripe
        await exporter.send(client, events(4))
    got = billing.unique(receiver_name, "Bearer secret-" + type_ + "-1234")
    assert sorted(got) == [f"call-{i}" for i in range(4)]
    assert len(billing.events(receiver_name, "Bearer secret-" + type_ + "-1234")) == stored


async def test_grants_are_sent_only_with_a_grant_code(billing_receiver: FakeBillingServer, billing: FakeBilling) -> None:
    async with httpx.AsyncClient() as client:
        await build(exporter_settings("lago", url=billing_receiver.url)).send(client, [GRANT])
        assert billing.received == []
        await build(exporter_settings("lago", url=billing_receiver.url, grant_code="topup")).send(client, [GRANT])
    assert [(r.event_id, r.body["code"]) for r in billing.received] == [("ledger-42", "topup")]


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (500, True), (429, True), (408, True),
                                                   (401, True), (403, True), (404, True),
                                                   (400, False), (413, False), (422, False)])
async def test_failures_say_whether_to_retry_and_never_echo_the_key(
        status: int, retryable: bool, billing_receiver: FakeBillingServer, billing: FakeBilling) -> None:
    billing.fail(status, 1)
    async with httpx.AsyncClient() as client:
        with pytest.raises(DeliveryError) as info:
            await build(exporter_settings("lago", url=billing_receiver.url)).send(client, events(1))
    assert info.value.retryable is retryable
    assert str(info.value) == f"lago-test: HTTP {status}"


async def test_a_dropped_connection_and_a_down_receiver_are_retryable(billing_receiver: FakeBillingServer,
                                                                     billing: FakeBilling) -> None:
    exporter = build(exporter_settings("openmeter", url=billing_receiver.url))
    billing.drop_after_accept(1)
    async with httpx.AsyncClient() as client:
        with pytest.raises(DeliveryError) as info:
            await exporter.send(client, events(2))
        assert info.value.retryable and "secret" not in str(info.value)
        assert len(billing.received) == 2  # accepted before the drop: a retry sends them again
        billing_receiver.down()
        try:
            with pytest.raises(DeliveryError) as info:
                await exporter.send(client, events(1))
            assert info.value.retryable
        finally:
            billing_receiver.up()


# ---- settings and backoff --------------------------------------------------------------------------------
def test_receiver_limits_and_defaults() -> None:
    assert exporter_settings("lago").batch == 100 and exporter_settings("lago", batch_size=500).batch == 100
    assert exporter_settings("openmeter", batch_size=50).batch == 50
    assert exporter_settings("stripe").max_age_days == 35
    assert exporter_settings("stripe", max_event_age_days=90).max_age_days == 35
    assert exporter_settings("lago").max_age_days is None
    assert exporter_settings("lago").base_url == "https://api.getlago.com"
    assert exporter_settings("lago", url="http://x:1/").base_url == "http://x:1"


def billing_section(**extra) -> dict:
    return {**VALID, "credits": {"enabled": True},
            "billing": {"enabled": True, "exporters": [{"name": "lago", "type": "lago", "api_key": "k"}], **extra}}


@pytest.mark.parametrize(("section", "named"), [
    (billing_section(exporters=[{"name": "x", "type": "chargebee", "api_key": "k"}]),
     "litellm_plugins.billing.exporters.0.type:"),
    (billing_section(exporters=[{"name": "x", "type": "lago"}]),
     "litellm_plugins.billing.exporters.0.api_key: required setting is missing"),
    (billing_section(exporters=[{"name": "x", "type": "lago", "api_key": "k", "url": "ftp://x"}]),
     "litellm_plugins.billing.exporters.0.url:"),
    (billing_section(retry_max_seconds=0), "litellm_plugins.billing.retry_max_seconds:"),
    (billing_section(bogus=1), "litellm_plugins.billing.bogus: unknown setting"),
])
def test_invalid_billing_settings_name_the_key(section: dict, named: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(section)
    assert named in str(info.value)


@pytest.mark.parametrize(("settings", "credits_on", "named"), [
    ({"exporters": [{"name": "a", "type": "lago", "api_key": "k"}, {"name": "a", "type": "stripe", "api_key": "k"}]},
     True, "exporters[1].name: exporter 'a' is named twice"),
    ({}, False, "enable litellm_plugins.credits too"),
    ({"lease_ttl_seconds": 5, "request_timeout_seconds": 10}, True, "lease_ttl_seconds: must be longer"),
])
def test_cross_checks(settings: dict, credits_on: bool, named: str) -> None:
    config = {"litellm_plugins": {"credits": {"enabled": credits_on}}}
    with pytest.raises(SettingsError, match=named.replace("[", r"\[").replace("]", r"\]")):
        BillingSettings(enabled=True, **settings).check_config(config)


def test_disabled_billing_does_not_need_its_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LP_UNSET_LAGO_KEY", raising=False)
    exporters = [{"name": "lago", "type": "lago", "api_key": "os.environ/LP_UNSET_LAGO_KEY"}]
    assert parse_settings({**VALID, "billing": {"enabled": False, "exporters": exporters}}).billing.enabled is False
    with pytest.raises(SettingsError, match="litellm_plugins.billing.exporters\\[0\\].api_key: environment "
                                            "variable LP_UNSET_LAGO_KEY is not set"):
        parse_settings({**VALID, "billing": {"enabled": True, "exporters": exporters}})


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    for failures, full in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 60.0), (50, 60.0)]:
        delays = [backoff(failures, 0.5, 60.0) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered


# ---- the outbox in a real database -------------------------------------------------------------------------
@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database, server_settings={"search_path": "litellm_plugins"})
    await migrate(c)
    try:
        yield c
    finally:
        await c.close()


async def settled(conn: asyncpg.Connection, after: tuple[int, int] = (0, 0), usage_wait: float = 60,
                  want: int = 1) -> list[store.Event]:
    """``next_batch`` once it has ``want`` events (up to 60 s): a long write transaction anywhere on the
    same cluster (another test run's, a benchmark's fill) holds back what is settled meanwhile."""
    for _ in range(600):
        batch = await store.next_batch(conn, after, 100, usage_wait)
        if len(batch) >= want:
            return batch
        await asyncio.sleep(0.1)
    return batch


LEDGER = ("INSERT INTO credit_ledger (account, kind, delta, amount, hold_id, call_id, idempotency_key) "
          "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")


async def test_trigger_writes_charges_and_grants_in_the_ledgers_transaction(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        grant_id = await conn.fetchval(LEDGER, "user:a", "grant", 5_000_000, 5_000_000, None, None, "g1")
        await conn.fetchval(LEDGER, "user:a", "hold", 0, 700, "h1", "call-1", None)
        await conn.fetchval(LEDGER, "user:a", "settle", -600, 600, "h1", "call-1", None)
        await conn.fetchval(LEDGER, "user:a", "void", 0, 700, "h2", "call-2", None)
    with pytest.raises(RuntimeError):
        async with conn.transaction():  # rolled back: its outbox row goes with it
            await conn.fetchval(LEDGER, "user:a", "settle", -900, 900, "h3", "call-3", None)
            raise RuntimeError("writer batch failed")
    rows = await conn.fetch("SELECT event_id, kind, units, account FROM billing_outbox ORDER BY seq")
    assert [tuple(r) for r in rows] == [(f"ledger-{grant_id}", "grant", 5_000_000, "user:a"),
                                        ("call-1", "charge", 600, "user:a")]


async def test_a_late_commit_is_never_skipped_by_the_cursor(conn: asyncpg.Connection, database: str) -> None:
    """A transaction that took its sequence number first but commits last is still exported, in order."""
    slow = await asyncpg.connect(database, server_settings={"search_path": "litellm_plugins"})
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.fetchval(LEDGER, "user:slow", "settle", -1, 1, "hs", "call-slow", None)  # seq 1, open
        await conn.fetchval(LEDGER, "user:fast", "settle", -2, 2, "hf", "call-fast", None)  # seq 2, committed
        assert await store.next_batch(conn, (0, 0), 100, 0) == []  # nothing past the open transaction
        await tx.commit()
        batch = await settled(conn, usage_wait=0, want=2)
    finally:
        await slow.close()
    assert [e.event_id for e in batch] == ["call-slow", "call-fast"]
    await store.advance(conn, "x", (batch[0].txid, batch[0].seq), 1)
    await store.advance(conn, "x", (0, 0), 5)  # never backwards
    assert await store.cursor(conn, "x") == (batch[0].txid, batch[0].seq)
    assert [e.event_id for e in await settled(conn, await store.cursor(conn, "x"), 0)] == ["call-fast"]


async def test_a_charge_waits_for_its_usage_row(conn: asyncpg.Connection) -> None:
    await conn.fetchval(LEDGER, "user:u", "settle", -5, 5, "hu", "call-u", None)
    await conn.fetchval(LEDGER, "user:u", "grant", 9, 9, None, None, "g-u")
    assert await store.next_batch(conn, (0, 0), 100, 60) == []  # the grant waits behind the charge
    await conn.execute("INSERT INTO usage_log (id, call_id, account, model_group, power_level, prompt_tokens, "
                       "completion_tokens, cost_usd, credits_charged, status) "
                       "VALUES ('hu', 'call-u', 'user:u', 'g', 'eco', 3, 4, 0.05, 5, 'success')")
    batch = await settled(conn, want=2)
    assert [(e.event_id, e.model_group, e.prompt_tokens, e.cost_usd) for e in batch] == [
        ("call-u", "g", 3, Decimal("0.05")), (batch[1].event_id, None, 0, Decimal(0))]
    assert [e.customer for e in batch] == ["user:u", "user:u"]  # no billing_customer recorded
    await conn.execute("UPDATE usage_log SET billing_customer = 'cus_U' WHERE id = 'hu'")
    assert [e.customer for e in await settled(conn, want=2)] == ["cus_U", "user:u"]
    old = datetime.now(timezone.utc) - timedelta(seconds=120)
    await conn.execute("UPDATE billing_outbox SET created_at = $1", old)
    await conn.execute("DELETE FROM usage_log")
    assert len(await settled(conn, want=2)) == 2  # waited long enough: sent without it


# ---- operators' webhooks ----------------------------------------------------------------------------------
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    assert signature(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def charge(balance_after: int, units: int, event_id: str = "call-x") -> store.Event:
    return store.Event(seq=1, txid=1, event_id=event_id, account="user:w", kind="charge", units=units,
                       created_at=AT, balance_after=balance_after)


@pytest.mark.parametrize(("balance_after", "units", "fires"), [
    (99_999_999, 2, True),        # 100.000001 -> 99.999999 crosses 100
    (99_999_999, 1, True),        # from exactly the threshold
    (100_000_000, 5, False),      # lands on the threshold: not below it
    (50_000_000, 1, False),       # already below
    (200_000_000, 10, False),     # far above
])
def test_low_balance_fires_once_when_a_charge_crosses_the_threshold(balance_after: int, units: int,
                                                                    fires: bool) -> None:
    made = message(charge(balance_after, units), 100_000_000)
    assert (made is not None) is fires
    if fires:
        assert made == ("low_balance", {"account": "user:w", "balance": fmt(balance_after),
                                        "threshold": "100.000000", "charge_id": "call-x"})


def webhook(server: FakeBillingServer, **extra) -> ExporterSettings:
    return ExporterSettings(name="ops", type="webhook", url=server.url + "/hooks/ops", api_key=SECRET, **extra)


async def test_webhooks_are_signed_and_filtered_by_type(billing_receiver: FakeBillingServer, billing: FakeBilling) -> None:
    down = store.Event(seq=2, txid=2, event_id="health-9", account="openai", kind="provider_down", units=0,
                       created_at=AT, data={"model_id": "m1", "model_group": "gpt-4o-mini", "provider": "openai",
                                            "state": "open", "reason": "5 failures"})
    async with httpx.AsyncClient() as client:
        await build(webhook(billing_receiver, low_balance_credits=100)).send(client, [charge(99_999_999, 2), down, GRANT])
        await build(webhook(billing_receiver, events=("provider_up",))).send(client, [charge(99_999_999, 2), down])
    got = billing.events("webhook", "/hooks/ops")
    assert [(r.event_id, r.body["json"]["type"]) for r in got] == [("call-x:low_balance", "low_balance"),
                                                                    ("health-9:provider_down", "provider_down")]
    assert got[1].body["json"] == {"type": "provider_down", "timestamp": "2026-12-01T12:30:15Z",
                                   "data": down.data}
    for r in got:
        assert r.body["signature"] == signature(SECRET, r.event_id, int(r.body["timestamp"]), r.body["raw"])
        assert r.body["signature"] != signature("whsec_" + "QUJD", r.event_id, int(r.body["timestamp"]),
                                                r.body["raw"])


@pytest.mark.parametrize(("extra", "named"), [
    ({"url": None, "api_key": SECRET}, "needs its url"),
    ({"url": "http://h/x", "api_key": "not-a-secret"}, "whsec_<base64>"),
    ({"url": "http://h/x", "api_key": "whsec_!!"}, "whsec_<base64>"),
    ({"url": "http://h/x", "api_key": SECRET, "events": ["allowance_refill"]}, "events"),  # no such type
])
def test_webhook_settings_are_checked(extra: dict, named: str) -> None:
    section = {**VALID, "credits": {"enabled": True},
               "billing": {"enabled": True, "exporters": [{"name": "ops", "type": "webhook", **extra}]}}
    with pytest.raises(SettingsError, match=named.replace("[", r"\[")):
        parse_settings(section)


def test_webhook_events_default_to_every_type_including_allowance_reset() -> None:
    section = {**VALID, "credits": {"enabled": True}, "billing": {"enabled": True, "exporters": [
        {"name": "ops", "type": "webhook", "url": "http://h/x", "api_key": SECRET, "events": ["allowance_reset"]},
        {"name": "all", "type": "webhook", "url": "http://h/y", "api_key": SECRET}]}}
    exporters = parse_settings(section).billing.exporters
    assert exporters[0].events == ("allowance_reset",)
    assert "allowance_reset" in exporters[1].events


def allowance(key: str, allowance_units: int, units: int, balance_after: int,
              account: str = "user:alice") -> store.Event:
    return store.Event(seq=3, txid=3, event_id="ledger-77", account=account, kind="allowance_reset", units=units,
                       created_at=AT, balance_after=balance_after,
                       data={"idempotency_key": key, "allowance": allowance_units, "note": "allowance"})


@pytest.mark.parametrize(("event", "data"), [
    (allowance("allowance:user:alice:2026-12-01/month", 500_000_000, 500_000_000, 512_500_000),  # a refill
     {"account": "user:alice", "period": "2026-12-01/month", "allowance": "500.000000", "added": "500.000000",
      "balance": "512.500000", "upgrade": False}),
    (allowance("allowance:user:alice:2026-12-01/month:800000000", 800_000_000, 300_000_000, 700_000_000),
     {"account": "user:alice", "period": "2026-12-01/month", "allowance": "800.000000", "added": "300.000000",
      "balance": "700.000000", "upgrade": True}),  # a mid-period upgrade grants the difference
    (allowance("allowance:team:ops:2026-11-30/week", -1, 0, 3_000_000, account="team:ops"),
     {"account": "team:ops", "period": "2026-11-30/week", "allowance": "unlimited", "added": "0.000000",
      "balance": "3.000000", "upgrade": False}),  # unlimited: never part of the balance
    (allowance("allowance:key:ab:cd:2026-12-01/day:-1", -1, -2_000_000, 1_000_000, account="key:ab:cd"),
     {"account": "key:ab:cd", "period": "2026-12-01/day", "allowance": "unlimited", "added": "-2.000000",
      "balance": "1.000000", "upgrade": True}),  # upgrade to unlimited: what was left leaves the balance
])
def test_allowance_reset_webhook_data(event: store.Event, data: dict) -> None:
    assert message(event, 100_000_000) == ("allowance_reset", data)
    assert build(ExporterSettings(name="ops", type="webhook", url="http://h/x", api_key=SECRET)).code(event) \
        == "allowance_reset"
    assert build(ExporterSettings(name="ops", type="webhook", url="http://h/x", api_key=SECRET,
                                  events=("low_balance",))).code(event) is None


ALLOWANCE = allowance("allowance:user:alice:2026-12-01/month", 500_000_000, 500_000_000, 500_000_000)


@pytest.mark.parametrize("type_", ["lago", "openmeter", "stripe"])
async def test_billing_receivers_never_get_an_allowance_reset(type_: str, billing_receiver: FakeBillingServer,
                                                              billing: FakeBilling) -> None:
    """A refill is not a charge, and not a grant either (even with a grant_code): webhooks only."""
    exporter = build(exporter_settings(type_, url=billing_receiver.url, grant_code="topup"))
    assert exporter.code(ALLOWANCE) is None  # the worker skips it and moves the cursor past it
    async with httpx.AsyncClient() as client:
        await exporter.send(client, [ALLOWANCE])
        assert billing.received == []
        await exporter.send(client, [ALLOWANCE, GRANT])
    assert [r.event_id for r in billing.received] == ["ledger-42"]


async def test_webhook_sends_a_signed_allowance_reset(billing_receiver: FakeBillingServer,
                                                      billing: FakeBilling) -> None:
    async with httpx.AsyncClient() as client:
        await build(webhook(billing_receiver)).send(client, [ALLOWANCE])
    [got] = billing.events("webhook", "/hooks/ops")
    assert got.event_id == "ledger-77:allowance_reset"
    assert got.body["json"] == {"type": "allowance_reset", "timestamp": "2026-12-01T12:30:15Z", "data": {
        "account": "user:alice", "period": "2026-12-01/month", "allowance": "500.000000", "added": "500.000000",
        "balance": "500.000000", "upgrade": False}}
    assert got.body["signature"] == signature(SECRET, got.event_id, int(got.body["timestamp"]), got.body["raw"])


ENSURE = "SELECT credits_ensure_allowance($1, 'pro', $2, $3, '2027-01-01T00:00:00Z'::timestamptz, 0)"


async def test_an_allowance_refill_is_one_outbox_event_per_period_and_upgrade(conn: asyncpg.Connection) -> None:
    """Migration 20261202010000: the ledger's 'allowance' entries become allowance_reset outbox rows,
    once each (ledger idempotency key, unique event id); expiries and downgrades are not exported."""
    for period, amount in [("2026-12-01/month", 5_000_000), ("2026-12-01/month", 5_000_000),  # again: nothing
                           ("2026-12-01/month", 8_000_000), ("2026-12-01/month", 6_000_000),  # up, then down
                           ("2027-01-01/month", 8_000_000)]:  # next period: the rest expires, then a refill
        await conn.execute(ENSURE, "user:al", period, amount)
    rows = await conn.fetch("SELECT event_id, kind, units, balance_after FROM billing_outbox "
                            "WHERE kind <> 'grant' ORDER BY seq")  # (the account's starting grant of 0)
    assert [(r["kind"], r["units"], r["balance_after"]) for r in rows] == [
        ("allowance_reset", 5_000_000, 5_000_000), ("allowance_reset", 3_000_000, 8_000_000),
        ("allowance_reset", 8_000_000, 8_000_000)]
    assert all(r["event_id"].startswith("ledger-") for r in rows)
    batch = [e for e in await settled(conn, usage_wait=0, want=4) if e.kind == "allowance_reset"]
    assert [message(e, 100)[1] for e in batch] == [
        {"account": "user:al", "period": "2026-12-01/month", "allowance": "5.000000", "added": "5.000000",
         "balance": "5.000000", "upgrade": False},
        {"account": "user:al", "period": "2026-12-01/month", "allowance": "8.000000", "added": "3.000000",
         "balance": "8.000000", "upgrade": True},
        {"account": "user:al", "period": "2027-01-01/month", "allowance": "8.000000", "added": "8.000000",
         "balance": "8.000000", "upgrade": False}]
    assert all(build(exporter_settings(t, grant_code="g")).code(batch[0]) is None
               for t in ("lago", "openmeter", "stripe"))


EXHAUSTED_USAGE = ("INSERT INTO usage_log (id, call_id, account, requested_model, status, error_type) "
                   "VALUES ($1, $1, $2, 'gpt-4o-mini', 'rejected', $3)")


async def test_a_402_is_one_credits_exhausted_event_per_balance_version(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO credit_accounts (account, balance, version) VALUES ('user:x', 5, 3)")
    await conn.execute(EXHAUSTED_USAGE, "r1", "user:x", "insufficient_credits")
    await conn.execute(EXHAUSTED_USAGE, "r2", "user:x", "insufficient_credits")  # same version: same event
    await conn.execute(EXHAUSTED_USAGE, "r3", "user:x", "rate_limit_error")  # another rejection: none
    await conn.execute(EXHAUSTED_USAGE, "r4", "user:new", "insufficient_credits")  # no account row yet
    await conn.execute("UPDATE credit_accounts SET balance = 7, version = 4 WHERE account = 'user:x'")  # a grant
    await conn.execute(EXHAUSTED_USAGE, "r5", "user:x", "insufficient_credits")
    rows = await conn.fetch("SELECT event_id, kind, account, units, balance_after, call_id FROM billing_outbox "
                            "ORDER BY seq")
    assert [tuple(r) for r in rows] == [
        ("exhausted:user:x:v3", "credits_exhausted", "user:x", 0, 5, "r1"),
        ("exhausted:user:new:v0", "credits_exhausted", "user:new", 0, None, "r4"),
        ("exhausted:user:x:v4", "credits_exhausted", "user:x", 0, 7, "r5")]
    batch = await settled(conn, usage_wait=0, want=3)
    assert message(batch[0], 100) == ("credits_exhausted", {
        "account": "user:x", "balance": "0.000005", "call_id": "r1", "requested_model": "gpt-4o-mini"})
    assert all(build(exporter_settings(t)).code(batch[0]) is None for t in ("lago", "openmeter", "stripe"))


HEALTH = "INSERT INTO health_events (model_id, model_group, provider, state, up) VALUES ($1, 'g', 'openai', $2, $3)"


async def test_provider_down_and_up_are_outbox_rows_only_when_up_flips(conn: asyncpg.Connection) -> None:
    for state, up in [("closed", True), ("open", False), ("forced_down", False), ("closed", True), ("closed", True)]:
        await conn.execute(HEALTH, "m1", state, up)
    await conn.execute(HEALTH, "m2", "open", False)  # first seen down
    rows = await conn.fetch("SELECT kind, account, data FROM billing_outbox ORDER BY seq")
    assert [(r["kind"], json.loads(r["data"])["model_id"], json.loads(r["data"])["state"]) for r in rows] == [
        ("provider_down", "m1", "open"), ("provider_up", "m1", "closed"), ("provider_down", "m2", "open")]
    batch = await settled(conn, usage_wait=0, want=3)
    assert [e.data["model_id"] for e in batch] == ["m1", "m1", "m2"] and batch[0].account == "openai"


async def test_prune_deletes_only_what_every_exporter_acknowledged(conn: asyncpg.Connection) -> None:
    assert await store.prune(conn, ["a"], 0, 10) == 0  # no cursor yet: nothing
    for i in range(5):
        await conn.fetchval(LEDGER, "user:p", "grant", 1, 1, None, None, f"p{i}")
    rows = await conn.fetch("SELECT txid, seq FROM billing_outbox ORDER BY seq")
    await store.advance(conn, "a", (rows[2]["txid"], rows[2]["seq"]), 3)
    await conn.execute("INSERT INTO billing_dead_letters (exporter, seq, event_id, reason) VALUES ('a', $1, 'x', 'r')",
                       rows[0]["seq"])
    assert await store.prune(conn, ["a", "b"], 0, 10) == 0  # b has not acknowledged anything
    assert await store.prune(conn, ["a"], 1, 10) == 0  # younger than a day
    assert await store.prune(conn, ["a"], 0, 1) == 1  # a batch at a time
    assert await store.prune(conn, ["a"], 0, 10) == 1
    left = [r["seq"] for r in await conn.fetch("SELECT seq FROM billing_outbox ORDER BY seq")]
    assert left == [rows[0]["seq"], rows[3]["seq"], rows[4]["seq"]]  # the dead letter's and the unacknowledged
