"""Tier allowances, buckets and spend caps end to end (issue #19): real proxies, real Postgres and Redis.

The proxies' calendar clock is moved through ``LITELLM_PLUGINS_CLOCK_FILE`` (core/clock.py): a month
boundary is crossed in a second, by both proxies at once. Runs on a private Postgres and a private
Redis (tests/support/private_services.py) so FLUSHALL disturbs no other test.

Every call below is the same request (``BODY``): its charge is ``C`` units at markup 1 (the fake
provider answers 8 tokens), so allowances are set in multiples of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.proxy import MASTER_KEY
from tests.test_credits_e2e import CREDITS, OTHERS_OFF, credits, expected_units, plugins_cli, units_of
from tests.test_credits_e2e import db_fetch as rows
from tests.test_credits_e2e import wait_for as until

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "allowance test"}], "max_tokens": 8}
C = expected_units("gpt-4o", BODY)  # one call's charge, units
START_UNITS = 5 * C  # starting grant: the paid balance of a new account
ALLOWANCES = {"free": {"amount": credits(3 * C), "period": "month"},
              "pro": {"amount": credits(10 * C), "period": "month"},
              "unl": {"amount": "unlimited", "period": "month"},
              "daily": {"amount": credits(2 * C), "period": "day"},
              "zero": {"amount": 0, "period": "week"}}
CAPS = {"capped": {"day": credits(3 * C)}}
UTC = dt.UTC


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    """The proxies' calendar clock: ``set(t)`` makes their ``clock.now()`` read ``t`` (and go on ticking)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(at("2027-03-10T12:00:00"))

    def set(self, when: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(repr(when - time.time()))
        tmp.replace(self.path)
        time.sleep(0.05)  # the proxies re-read the file on its next mtime change

    def now(self) -> float:
        return time.time() + float(self.path.read_text())


@pytest.fixture(scope="module")
def clock(tmp_path_factory) -> Clock:
    return Clock(tmp_path_factory.mktemp("clock") / "offset")


@pytest.fixture(scope="module")
def launch(pg, rds, clock, tmp_path_factory, start_proxy):
    spool = tmp_path_factory.mktemp("alw-spool")

    def go(name: str):
        settings = {**CREDITS, "starting_grant": credits(START_UNITS), "allowances": ALLOWANCES, "caps": CAPS,
                    "spool_dir": str(spool), "tier_markup": {}}
        return start_proxy(plugins={**OTHERS_OFF, "credits": settings}, name=name,
                           env={"LITELLM_PLUGINS_DATABASE_URL": pg.dsn, "LITELLM_PLUGINS_REDIS_URL": rds.url,
                                "LITELLM_PLUGINS_CLOCK_FILE": str(clock.path)})
    return go


@pytest.fixture(scope="module")
def proxy(launch):
    return launch("alw-a")


@pytest.fixture(scope="module")
def proxy_b(launch, proxy):
    return launch("alw-b")


def call(proxy, key: str, body: dict | None = None) -> httpx.Response:
    with proxy.client(key) as c:
        return c.post("/v1/chat/completions", json=body or BODY)


def balance(proxy, key: str = MASTER_KEY, account: str | None = None) -> dict:
    with proxy.client(key) as c:
        r = c.get("/plugins/credits/balance", params={"account": account} if account else None)
    assert r.status_code == 200, r.text
    return r.json()


def grant(proxy, account: str, amount_units: int, key: str, **extra) -> httpx.Response:
    with proxy.client() as c:
        return c.post("/plugins/credits/grant", json={"account": account, "amount": credits(amount_units),
                                                      "idempotency_key": key, **extra})


async def settles(dsn: str, account: str, n: int) -> list:
    got = await until(dsn, "SELECT * FROM credit_ledger WHERE account = $1 AND kind = 'settle' ORDER BY id",
                      account, expect=lambda r: len(r) >= n)
    assert len(got) == n, [dict(r) for r in got]
    return got


async def kinds(dsn: str, account: str) -> list[tuple[str, int, str | None]]:
    got = await rows(dsn, "SELECT kind, delta, idempotency_key FROM credit_ledger WHERE account = $1 "
                          "AND kind IN ('grant', 'allowance', 'allowance_expire', 'bucket_expire') ORDER BY id", account)
    return [(r["kind"], r["delta"], r["idempotency_key"]) for r in got]


def verify_ok(proxy, dsn: str) -> None:
    result = plugins_cli(proxy, dsn, "credits", "verify")
    assert result.returncode == 0, result.stdout + result.stderr


async def test_first_request_of_a_period_refills_once_and_the_header_says_when(proxy, keys, fake, pg, clock):
    keys.add("sk-alw-first", user_id="alw-first", metadata={"tier": "free"})
    r = call(proxy, "sk-alw-first")
    assert r.status_code == 200, r.text
    assert r.headers["x-litellm-plugins-credits-resets-at"] == "2027-04-01T00:00:00Z"
    assert units_of(r.headers["x-litellm-plugins-credits-charged"]) == C
    # balance header: the paid balance + this month's allowance, less the charge
    assert units_of(r.headers["x-litellm-plugins-credits-balance"]) == START_UNITS + 3 * C - C
    await settles(pg.dsn, "user:alw-first", 1)
    assert await kinds(pg.dsn, "user:alw-first") == [
        ("grant", START_UNITS, "starting-grant:user:alw-first"),
        ("allowance", 3 * C, "allowance:user:alw-first:2027-03-01/month")]
    view = balance(proxy, "sk-alw-first")
    assert view["tier"] == "free"
    assert view["allowance"] == {"period": "month", "period_start": "2027-03-01", "amount": credits(3 * C),
                                 "left": credits(2 * C), "resets_at": "2027-04-01T00:00:00Z"}
    assert [(b["kind"], b["remaining"]) for b in view["buckets"]] == [("allowance", credits(2 * C)),
                                                                      ("paid", credits(START_UNITS))]
    assert view["spend"] == {"day": credits(C), "week": credits(C), "month": credits(C)}
    assert units_of(view["balance"]) == START_UNITS + 2 * C


async def test_refill_at_a_period_boundary_with_two_proxies_racing(proxy, proxy_b, keys, fake, pg, clock):
    accounts = [f"alw-race{i}" for i in range(4)]
    for name in accounts:
        keys.add(f"sk-{name}", user_id=name, metadata={"tier": "free"})
    clock.set(at("2027-03-20T10:00:00"))
    for name in accounts:  # March: each spends one of its three allowance calls
        assert call(proxy, f"sk-{name}").status_code == 200
    clock.set(at("2027-04-01T00:00:01"))
    # April's first requests: 4 per account (their holds fit in what is available), 2 on each proxy, all at once
    jobs = [(p, f"sk-{name}") for name in accounts for p in (proxy, proxy_b) * 2]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda j: call(*j), jobs))
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    assert {r.headers["x-litellm-plugins-credits-resets-at"] for r in results} == {"2027-05-01T00:00:00Z"}
    for name in accounts:
        acct = f"user:{name}"
        await settles(pg.dsn, acct, 5)
        # (in whatever order the writers and the idle-account sweep got there first)
        assert sorted(await kinds(pg.dsn, acct)) == sorted([
            ("grant", START_UNITS, f"starting-grant:{acct}"),
            ("allowance", 3 * C, f"allowance:{acct}:2027-03-01/month"),
            ("allowance_expire", -2 * C, f"allowance-expire:{acct}:2027-03-01/month"),
            ("allowance", 3 * C, f"allowance:{acct}:2027-04-01/month")])
        # April: 4 calls = the 3 of the allowance, then 1 from the paid balance
        got = await rows(pg.dsn, "SELECT balance FROM credit_accounts WHERE account = $1", acct)
        assert got[0]["balance"] == START_UNITS - C
    verify_ok(proxy, pg.dsn)


async def test_spending_order_across_buckets_to_the_unit(proxy, keys, fake, pg, clock):
    clock.set(at("2027-04-10T09:00:00"))
    acct = "user:alw-order"
    keys.add("sk-alw-order", user_id="alw-order", metadata={"tier": "free"})
    assert call(proxy, "sk-alw-order").status_code == 200  # opens the account: allowance 3C, spends C of it
    await settles(pg.dsn, acct, 1)
    half = C // 2
    later = grant(proxy, acct, 3 * half, "alw-order-promo-later", kind="promotional",
                  expires_at="2027-06-30T00:00:00Z")
    sooner = grant(proxy, acct, half, "alw-order-promo-sooner", kind="promotional",
                   expires_at="2027-05-15T00:00:00Z")
    paid_exp = grant(proxy, acct, C, "alw-order-paid-exp", kind="paid", expires_at="2027-05-01T00:00:00Z")
    for r in (later, sooner, paid_exp):
        assert r.status_code == 200, r.text
    ids = {b["kind"] + ":" + (b["expires_at"] or ""): b["id"] for b in balance(proxy, account=acct)["buckets"]}
    alw = ids["allowance:2027-05-01T00:00:00Z"]
    sooner_id, later_id = ids["promotional:2027-05-15T00:00:00Z"], ids["promotional:2027-06-30T00:00:00Z"]
    paid_id = ids["paid:2027-05-01T00:00:00Z"]
    # Left: allowance 2C, promo sooner C/2, promo later 3C/2, paid-expiring C, paid START (5C).
    for _ in range(6):
        assert call(proxy, "sk-alw-order").status_code == 200
    got = await settles(pg.dsn, acct, 7)
    splits = [json.loads(r["split"]) if r["split"] else {} for r in got[1:]]
    # The general rule, simulated: each charge takes from the buckets in order until it is covered.
    left = [(alw, 2 * C), (sooner_id, half), (later_id, 3 * half), (paid_id, C)]
    want = []
    for _ in range(6):
        need, split = C, {}
        for i, (bid, units) in enumerate(left):
            take = min(need, units)
            if take:
                split[str(bid)] = take
                left[i] = (bid, units - take)
                need -= take
        want.append(split)
    assert splits == want
    assert all(r["delta"] == -C for r in got)
    view = balance(proxy, account=acct)
    paid_left = START_UNITS - (6 * C - (2 * C + half + 3 * half + C))
    assert [(b["kind"], b["remaining"]) for b in view["buckets"]] == [("paid", credits(paid_left))]
    assert units_of(view["balance"]) == paid_left
    verify_ok(proxy, pg.dsn)


async def test_a_hold_that_spans_a_boundary_spends_the_new_period(proxy, keys, fake, pg, clock):
    acct = "user:alw-span"
    keys.add("sk-alw-span", user_id="alw-span", metadata={"tier": "daily"})
    clock.set(at("2027-04-20T23:59:57"))
    fake.provider.set_delay(5.0, "gpt-4o")
    r = call(proxy, "sk-alw-span")
    fake.provider.set_delay(0.0, "gpt-4o")
    assert r.status_code == 200, r.text
    # checked against the 20th's allowance (the header says when that one resets) ...
    assert r.headers["x-litellm-plugins-credits-resets-at"] == "2027-04-21T00:00:00Z"
    await settles(pg.dsn, acct, 1)
    # ... charged when it ended, on the 21st: that day's allowance pays; the 20th's expires unspent
    assert await kinds(pg.dsn, acct) == [
        ("grant", START_UNITS, f"starting-grant:{acct}"),
        ("allowance", 2 * C, f"allowance:{acct}:2027-04-20/day"),
        ("allowance_expire", -2 * C, f"allowance-expire:{acct}:2027-04-20/day"),
        ("allowance", 2 * C, f"allowance:{acct}:2027-04-21/day")]
    settle = (await settles(pg.dsn, acct, 1))[0]
    bucket = (await rows(pg.dsn, "SELECT id FROM credit_buckets WHERE account = $1 AND period = '2027-04-21/day'",
                         acct))[0]["id"]
    assert json.loads(settle["split"]) == {str(bucket): C}
    verify_ok(proxy, pg.dsn)


async def test_flushall_mid_period_neither_repeats_nor_skips_the_refill(proxy, proxy_b, keys, fake, pg, rds, clock):
    acct = "user:alw-flush"
    keys.add("sk-alw-flush", user_id="alw-flush", metadata={"tier": "pro"})
    clock.set(at("2027-05-03T08:00:00"))
    for _ in range(3):
        assert call(proxy, "sk-alw-flush").status_code == 200
    await settles(pg.dsn, acct, 3)
    redis.Redis.from_url(rds.url).flushall()
    for p in (proxy_b, proxy, proxy_b):
        r = call(p, "sk-alw-flush")
        assert r.status_code == 200, r.text
    await settles(pg.dsn, acct, 6)
    assert [k for k in await kinds(pg.dsn, acct) if k[0] == "allowance"] == [
        ("allowance", 10 * C, f"allowance:{acct}:2027-05-01/month")]
    view = balance(proxy, account=acct)
    assert view["allowance"]["left"] == credits(4 * C)
    assert units_of(view["balance"]) == START_UNITS + 4 * C
    verify_ok(proxy, pg.dsn)


async def test_unused_allowance_expires_and_idle_accounts_are_renewed_by_the_sweep(proxy, keys, fake, pg, clock):
    acct = "user:alw-flush"  # spent 6C of May's 10C, then idle
    clock.set(at("2027-06-01T00:00:02"))
    got = await until(pg.dsn, "SELECT kind, delta, idempotency_key FROM credit_ledger WHERE account = $1 "
                              "AND kind IN ('allowance', 'allowance_expire') ORDER BY id", acct,
                      expect=lambda r: len(r) >= 3)
    assert [(r["kind"], r["delta"], r["idempotency_key"]) for r in got] == [
        ("allowance", 10 * C, f"allowance:{acct}:2027-05-01/month"),
        ("allowance_expire", -4 * C, f"allowance-expire:{acct}:2027-05-01/month"),
        ("allowance", 10 * C, f"allowance:{acct}:2027-06-01/month")]
    view = balance(proxy, account=acct)
    assert view["allowance"]["left"] == credits(10 * C) and view["allowance"]["resets_at"] == "2027-07-01T00:00:00Z"
    # the sweep's change reached Redis: a request now sees June's allowance (10C + the paid 5C)
    keys.add("sk-alw-flush", user_id="alw-flush", metadata={"tier": "pro"})
    r = call(proxy, "sk-alw-flush")
    assert units_of(r.headers["x-litellm-plugins-credits-balance"]) == START_UNITS + 10 * C - C
    verify_ok(proxy, pg.dsn)


async def test_tier_upgrade_mid_period_grants_the_difference_once_and_a_downgrade_claws_nothing(
        proxy, keys, fake, pg, clock):
    acct = "user:alw-up"
    clock.set(at("2027-06-10T10:00:00"))
    keys.add("sk-alw-up", user_id="alw-up", metadata={"tier": "free"})
    assert call(proxy, "sk-alw-up").status_code == 200  # June: 3C, C spent
    await settles(pg.dsn, acct, 1)
    await asyncio.sleep(0.3)  # Redis has the settled balance (copied right after the batch commits)
    keys.add("sk-alw-up", user_id="alw-up", metadata={"tier": "pro"})
    r = call(proxy, "sk-alw-up")  # upgrade: +7C at once
    assert r.status_code == 200
    assert units_of(r.headers["x-litellm-plugins-credits-balance"]) == START_UNITS + 10 * C - 2 * C
    keys.add("sk-alw-up", user_id="alw-up", metadata={"tier": "free"})
    assert call(proxy, "sk-alw-up").status_code == 200  # downgrade: nothing taken back
    keys.add("sk-alw-up", user_id="alw-up", metadata={"tier": "pro"})
    assert call(proxy, "sk-alw-up").status_code == 200  # pro again: 10C was already given
    await settles(pg.dsn, acct, 4)
    assert [k for k in await kinds(pg.dsn, acct) if k[0].startswith("allowance")] == [
        ("allowance", 3 * C, f"allowance:{acct}:2027-06-01/month"),
        ("allowance", 7 * C, f"allowance:{acct}:2027-06-01/month:{10 * C}")]
    view = balance(proxy, account=acct)
    assert view["allowance"]["amount"] == credits(10 * C) and view["allowance"]["left"] == credits(6 * C)
    # to unlimited: what was left of the finite allowance is replaced, and calls stop reducing the balance
    keys.add("sk-alw-up", user_id="alw-up", metadata={"tier": "unl"})
    for _ in range(3):
        assert call(proxy, "sk-alw-up").status_code == 200
    got = await settles(pg.dsn, acct, 7)
    assert [r["delta"] for r in got[4:]] == [0, 0, 0] and [r["amount"] for r in got[4:]] == [C, C, C]
    view = balance(proxy, account=acct)
    assert view["allowance"]["left"] == "unlimited" and units_of(view["balance"]) == START_UNITS
    verify_ok(proxy, pg.dsn)


async def test_unlimited_allowance_serves_past_the_paid_balance(proxy, keys, fake, pg, clock):
    acct = "user:alw-unl"
    keys.add("sk-alw-unl", user_id="alw-unl", metadata={"tier": "unl"})
    for _ in range(START_UNITS // C + 3):
        assert call(proxy, "sk-alw-unl").status_code == 200
    got = await settles(pg.dsn, acct, START_UNITS // C + 3)
    assert all(r["delta"] == 0 and json.loads(r["split"]) == {"unlimited": C} for r in got)
    assert units_of(balance(proxy, account=acct)["balance"]) == START_UNITS


async def test_spend_cap_answers_402_with_its_reset_time_and_resets_the_next_day(proxy, keys, fake, pg, clock):
    acct = "user:alw-cap"
    clock.set(at("2027-06-15T20:00:00"))
    keys.add("sk-alw-cap", user_id="alw-cap", metadata={"tier": "capped"})
    served, refused = [], None
    for _ in range(5):
        r = call(proxy, "sk-alw-cap")
        if r.status_code != 200:
            refused = r
            break
        served.append(r)
        await settles(pg.dsn, acct, len(served))
    assert refused is not None and refused.status_code == 402, refused.text if refused else "never refused"
    held = units_of(served[0].headers["x-litellm-plugins-credits-held"])
    assert len(served) * C + held > 3 * C >= (len(served) - 1) * C + held  # refused exactly at the cap
    err = refused.json()["error"]
    assert err["type"] == "spend_cap_reached"
    assert f"{credits(3 * C)} credits per day" in err["message"] and "2027-06-16T00:00:00Z" in err["message"]
    assert refused.headers["x-litellm-plugins-credits-resets-at"] == "2027-06-16T00:00:00Z"
    # the balance would cover the hold: it is the cap that refused
    assert units_of(balance(proxy, account=acct)["available"]) >= held
    view = balance(proxy, account=acct)
    assert view["caps"]["day"] == {"cap": credits(3 * C), "source": "tier", "spent": credits(len(served) * C),
                                   "resets_at": "2027-06-16T00:00:00Z"}
    clock.set(at("2027-06-16T00:00:03"))
    assert call(proxy, "sk-alw-cap").status_code == 200
    # an account's own cap: lower than the tier's, it wins; null removes it
    with proxy.client() as c:
        r = c.post("/plugins/credits/caps", json={"account": acct, "day": credits(C // 2)})
        assert r.status_code == 200, r.text
        assert r.json() == {"account": acct, "day": credits(C // 2), "week": None, "month": None}
        assert c.post("/plugins/credits/caps", json={"account": acct, "day": "-1"}).status_code == 400
        assert c.post("/plugins/credits/caps", json={"account": acct, "hour": 1}).status_code == 400
    await settles(pg.dsn, acct, len(served) + 1)
    r = call(proxy, "sk-alw-cap")
    assert r.status_code == 402 and f"{credits(C // 2)} credits per day" in r.json()["error"]["message"]
    with proxy.client("sk-alw-cap") as c:  # not an admin
        assert c.post("/plugins/credits/caps", json={"account": acct, "day": None}).status_code == 403
    with proxy.client() as c:
        assert c.post("/plugins/credits/caps", json={"account": acct, "day": None}).status_code == 200
    assert call(proxy, "sk-alw-cap").status_code == 200


async def test_grant_kinds_are_checked_and_the_cli_shows_buckets(proxy, keys, fake, pg, clock):
    acct = "user:alw-first"
    for extra, param in [({"kind": "gift"}, "kind"), ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
                         ({"expires_at": "tomorrow"}, "expires_at"),
                         ({"expires_at": "2030-01-01T00:00:00"}, "expires_at")]:
        r = grant(proxy, acct, C, f"alw-bad-{param}-{len(str(extra))}", **extra)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    r = grant(proxy, acct, C, "alw-promo-cli", kind="promotional", expires_at="2027-12-31T00:00:00Z")
    assert r.status_code == 200 and r.json()["kind"] == "promotional", r.text
    again = grant(proxy, acct, C, "alw-promo-cli", kind="paid")
    assert again.status_code == 409  # same key, different grant
    out = plugins_cli(proxy, pg.dsn, "credits", "balance", acct)
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout)
    promo = [b for b in view["buckets"] if b["kind"] == "promotional"]
    assert promo == [{"id": promo[0]["id"], "kind": "promotional", "period": None, "remaining": credits(C),
                      "expires_at": "2027-12-31T00:00:00Z"}]
    assert view["allowance"]["period"] == "month" and "spend" in view
    out = plugins_cli(proxy, pg.dsn, "credits", "caps", acct, "--week", "12.5")
    assert out.returncode == 0 and json.loads(out.stdout)["week"] == "12.500000", out.stdout + out.stderr
    out = plugins_cli(proxy, pg.dsn, "credits", "caps", acct, "--week", "lots")
    assert out.returncode != 0 and "week" in out.stderr


async def test_promotional_bucket_expires_and_verify_passes_after_everything(proxy, proxy_b, keys, fake, pg, clock):
    acct = "user:alw-first"
    clock.set(at("2028-01-02T00:00:00"))  # the promotional grant of the previous test has expired
    got = await until(pg.dsn, "SELECT delta FROM credit_ledger WHERE account = $1 AND kind = 'bucket_expire'",
                      acct, expect=lambda r: len(r) >= 1)
    assert [r["delta"] for r in got] == [-C]
    assert not [b for b in balance(proxy, account=acct)["buckets"] if b["kind"] == "promotional"]
    verify_ok(proxy, pg.dsn)
    with proxy.client() as c:
        assert c.get("/plugins/credits/verify").json() == {"ok": True, "problems": []}
