"""The web console in a real browser (Debian's headless chromium driven by Playwright) against the real
proxy, Postgres and Redis; the only fake is the LLM provider. One proxy and one browser for the module;
every test gets a fresh browser context (its own sessionStorage), so sign-in state never leaks.

Screenshots go to ``$CONSOLE_SCREENSHOTS`` (default: this module's temp dir); docs/console.md shows some.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.support.proxy import MASTER_KEY
from tests.support.proxy import test_config as shipped_test_config
from tests.test_credits_e2e import CREDITS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ALICE, BOB = "sk-console-alice", "sk-console-bob"
HTML_MODEL = '<img src=x onerror="window.__xss=1">evil<b>bold</b>'
HEALTH = {"enabled": True, "probe_enabled": False, "failure_threshold": 2, "cooldown_s": 600.0,
          "refresh_interval_s": 0.2}
CHAT = {"max_tokens": 5, "messages": [{"role": "user", "content": "hello console"}]}
# alice (and carol) are tier professional: a monthly allowance and a daily spend cap the tests never reach;
# bob (starter) has neither. The starting grant is CREDITS["starting_grant"] (1000).
ALLOWANCE = 50
ALLOWANCES = {"professional": {"amount": ALLOWANCE, "period": "month"}}
CAPS = {"professional": {"day": 500}}


@pytest.fixture(scope="module")
def proxy(start_proxy, fake_server, keys, tmp_path_factory):
    keys.add(ALICE, user_id="alice", metadata={"tier": "professional"})
    keys.add(BOB, user_id="bob", metadata={"tier": "starter"})
    # the shipped model list plus a model group whose name is HTML
    html_group = {"model_name": HTML_MODEL, "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": fake_server.base_url, "api_key": "sk-platform-openai",
        "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}}
    models = [*shipped_test_config(fake_server.base_url)["model_list"], html_group]
    plugins = {"credits": {**CREDITS, "allowances": ALLOWANCES, "caps": CAPS,
                           "spool_dir": str(tmp_path_factory.mktemp("console-spool"))},
               "health": HEALTH, "routing": {"account_defaults_refresh_s": 0.5}}
    return start_proxy(plugins=plugins, overrides={
        "model_list": models,
        "router_settings": {"num_retries": 0, "disable_cooldowns": True, "allowed_fails": 1000}})


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("CONSOLE_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}: install Debian's chromium (scripts/dev-env.sh does, as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")
    # Playwright's own browser download needs the internet: drive the system chromium instead.
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors
    yield pg
    context.close()


def expect(locator):
    from playwright.sync_api import expect as pw_expect
    return pw_expect(locator)


def chat(proxy, key: str, model: str = "gpt-4o-mini", **extra) -> httpx.Response:
    with proxy.client(key) as c:
        return c.post("/v1/chat/completions", json={**CHAT, "model": model, **extra}, headers=extra.pop("headers", None))


def wait_rows(proxy, key: str, n: int, timeout: float = 15.0) -> list[dict]:
    deadline = time.time() + timeout
    while True:
        with proxy.client(key) as c:
            rows = c.get("/plugins/usage", params={"limit": 1000}).json()["rows"]
        if len(rows) >= n or time.time() > deadline:
            return rows
        time.sleep(0.2)


def sign_in(page, proxy, key: str) -> None:
    page.goto(proxy.url + "/plugins/ui/")
    page.fill("#signin-key", key)
    page.click("#signin-submit")
    page.wait_for_selector("#who-account")


def card_text(page, name: str) -> str:
    return page.inner_text(f"#card-{name} .stat-value")


def test_page_is_static_strict_csp_gzipped_and_cacheable(proxy):
    r = httpx.get(proxy.url + "/plugins/ui/", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["content-encoding"] == "gzip" and r.headers["cache-control"] == "no-cache"
    assert "<script>" not in r.text and "style=" not in r.text and "sk-" not in r.text
    assets = re.findall(r'(?:src|href)="(assets/app-[0-9a-f]{16}\.(?:js|css))"', r.text)
    assert len(assets) == 2
    for path in assets:
        raw = httpx.get(f"{proxy.url}/plugins/ui/{path}", headers={"Accept-Encoding": "gzip"})
        assert raw.status_code == 200 and raw.headers["content-encoding"] == "gzip"
        assert raw.headers["cache-control"] == "public, max-age=31536000, immutable"
        again = httpx.get(f"{proxy.url}/plugins/ui/{path}", headers={"If-None-Match": raw.headers["etag"]})
        assert again.status_code == 304
        assert len(gzip.compress(raw.content)) < len(raw.content) or path.endswith(".css")
    assert httpx.get(proxy.url + "/plugins/ui/assets/..%2Fapi.py").status_code == 404
    assert httpx.get(proxy.url + "/plugins/ui/assets/app-0000000000000000.js").status_code == 404


def test_user_signs_in_sends_requests_and_sees_balance_and_charts_change(proxy, page, shots):
    assert chat(proxy, ALICE).status_code == 200  # opens the account (starting grant 1000 + allowance 50)
    wait_rows(proxy, ALICE, 1)
    sign_in(page, proxy, ALICE)
    assert page.inner_text("#who-account") == "user:alice"
    page.wait_for_selector("#card-requests")
    assert card_text(page, "requests") == "1"
    before = card_text(page, "available")
    for _ in range(3):
        assert chat(proxy, ALICE).status_code == 200
    assert chat(proxy, ALICE, model="eco").status_code == 200
    wait_rows(proxy, ALICE, 5)
    page.click("#usage-refresh")
    expect(page.locator("#card-requests .stat-value")).to_have_text("5")
    page.wait_for_selector("#panel-requests[data-state=ready]")
    page.wait_for_selector("#panel-level[data-state=ready]")
    page.wait_for_selector("#panel-provider[data-state=ready]")
    after = card_text(page, "available")
    assert float(after) < float(before) <= CREDITS["starting_grant"] + ALLOWANCE
    # the tier's allowance: what is left of this month's (charges spend it first), its size, when it resets
    assert 0 < float(card_text(page, "allowance")) < ALLOWANCE
    allowance_sub = page.inner_text("#card-allowance .stat-sub")
    assert allowance_sub.startswith(f"of {ALLOWANCE} per month · resets "), allowance_sub
    # the tier's day cap: what it still lets alice spend today (cap − spent), the cap and what was spent
    expect(page.locator("#card-caps .stat-title")).to_have_text("Left under day cap")
    assert 0 < float(card_text(page, "caps")) <= 500
    assert page.inner_text("#card-caps .stat-sub").startswith("day cap 500 · ")
    assert page.locator("#requests-table tbody tr").count() == 5
    levels = page.eval_on_selector_all("#filter-power_level option", "os => os.map(o => o.value)")
    assert "eco" in levels
    # the key: in sessionStorage only, never a cookie, localStorage or the URL
    assert page.evaluate("sessionStorage.getItem('litellm-plugins.console.key')") == ALICE
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    assert ALICE not in page.url
    page.screenshot(path=str(shots / "usage.png"), full_page=True)
    # a filter narrows cards and table
    page.select_option("#filter-power_level", "eco")
    expect(page.locator("#card-requests .stat-value")).to_have_text("1")
    expect(page.locator("#requests-table tbody tr")).to_have_count(1)
    page.click("#signout")
    page.wait_for_selector("#signin-key")
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    page.wait_for_selector("#signin-key")  # forgotten: a reload does not sign back in
    assert not page.js_errors, page.js_errors


def test_a_wrong_key_is_refused_and_not_kept(proxy, page):
    page.goto(proxy.url + "/plugins/ui/")
    page.fill("#signin-key", "sk-not-a-key")
    page.click("#signin-submit")
    expect(page.locator("#signin-status")).to_contain_text("not accepted")
    assert page.evaluate("sessionStorage.length") == 0 and page.locator("#who-account").count() == 0
    assert page.input_value("#signin-key") == ""


def test_export_csv_has_the_rows(proxy, page):
    rows = wait_rows(proxy, ALICE, 1)
    sign_in(page, proxy, ALICE)
    page.wait_for_selector("#requests-table tbody tr")
    with page.expect_download() as info:
        page.click("#export-csv")
    path = info.value.path()
    parsed = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    assert {r["id"] for r in parsed} == {r["id"] for r in rows}
    assert {r["account"] for r in parsed} == {"user:alice"}
    with page.expect_download() as info:
        page.click("#export-json")
    assert len(json.loads(Path(info.value.path()).read_text())) == len(rows)


def test_byok_wizard_adds_a_key_and_shows_it_masked(proxy, page, fake, shots):
    secret = "sk-alice-own-key-9f3e"
    sign_in(page, proxy, ALICE)
    page.click("#tab-byok")
    page.wait_for_selector("#wiz-provider option[value=openai]", state="attached")
    page.select_option("#wiz-provider", "openai")
    page.fill("#wiz-key", secret)
    page.click("#wiz-test")
    expect(page.locator("#wiz-test-result")).to_contain_text("accepted")
    page.check("input[name=wiz-policy][value=only]")
    page.click("#wiz-save")
    page.wait_for_selector("#byok-list tr[data-provider=openai]")
    row = page.locator("#byok-list tr[data-provider=openai]")
    assert row.locator(".key-mask").inner_text() == "…9f3e"
    assert "only" in row.inner_text()
    expect(page.locator("#byok-audit")).to_contain_text("openai")
    assert secret not in page.content()
    assert page.input_value("#wiz-key") == ""
    assert row.locator(".last-used").inner_text() == "never"
    expect(row.locator(".key-status")).to_have_text("not tested yet")
    # the key is used for alice's next call (the provider sees her key)
    fake.provider.reset()
    assert chat(proxy, ALICE).status_code == 200
    assert any(c.authorization == f"Bearer {secret}" for c in fake.provider.calls)
    # the list shows the use (written off the request path, every 2 s) and the test result
    row.locator("button[data-action=test]").click()
    expect(row.locator(".key-status")).to_contain_text("working (tested ", timeout=10_000)
    deadline = time.time() + 15
    while page.locator("#byok-list tr[data-provider=openai] .last-used").inner_text() == "never":
        assert time.time() < deadline, "last used never shown"
        page.click("#tab-usage")
        page.click("#tab-byok")
        page.wait_for_selector("#byok-list tr[data-provider=openai]")
        time.sleep(0.3)
    page.screenshot(path=str(shots / "byok.png"), full_page=True)
    # replace asks for confirmation like delete; cancel keeps the old key
    newer = "sk-alice-newer-key-77aa"
    page.click("#byok-list tr[data-provider=openai] button[data-action=replace]")
    expect(page.locator("#byok-wizard h3")).to_have_text("Replace your openai key")
    page.fill("#wiz-key", newer)
    page.click("#wiz-save")
    expect(page.locator("#wiz-confirm-replace")).to_contain_text("Replace your saved openai key …9f3e?")
    page.click("#wiz-confirm-replace button[data-action=cancel]")
    expect(page.locator("#wiz-confirm-replace")).to_have_count(0)
    with proxy.client(ALICE) as c:
        assert [k["key"] for k in c.get("/plugins/byok/keys").json()["data"]] == ["…9f3e"]
    page.click("#wiz-save")
    page.click("#wiz-confirm-replace button[data-action=confirm-replace]")
    expect(page.locator("#wiz-save-status")).to_contain_text("replacing the old one")
    expect(page.locator("#byok-list tr[data-provider=openai] .key-mask")).to_have_text("…77aa")
    expect(page.locator("#byok-audit")).to_contain_text("replace")
    assert newer not in page.content()


def test_second_user_never_sees_the_first_users_data(proxy, page):
    wait_rows(proxy, ALICE, 5)
    sign_in(page, proxy, BOB)
    page.wait_for_selector("#card-requests")
    assert card_text(page, "requests") == "0"
    # starter has no allowance or cap (and bob's account is not open yet): no such cards
    assert page.locator("#card-allowance").count() == 0 and page.locator("#card-caps").count() == 0
    page.wait_for_selector("#panel-requests[data-state=empty]")
    expect(page.locator("#requests-table")).to_contain_text("No requests")  # the table loads on its own
    assert "alice" not in page.content()
    page.click("#tab-byok")
    page.wait_for_selector("#byok-list .note")
    page.wait_for_selector("#byok-audit .note")
    assert "alice" not in page.content() and "9f3e" not in page.content() and "77aa" not in page.content()
    page.click("#tab-levels")
    page.wait_for_selector("#levels .level")
    assert "alice" not in page.content()
    assert page.locator("#tab-accounts").count() == 0 and page.locator("#tab-health").count() == 0
    # and the API behind the panels refuses what the page would not show
    with proxy.client(BOB) as c:
        assert c.get("/plugins/usage/dashboard", params={"account": "user:alice"}).status_code == 403
        assert c.get("/plugins/credits/accounts").status_code == 403
        assert c.get("/plugins/credits/verify").status_code == 403
        assert c.get("/plugins/byok/keys", params={"account": "user:alice"}).status_code == 403


def test_admin_grants_credits_and_the_user_sees_them(proxy, browser, page, shots):
    wait_rows(proxy, ALICE, 1)
    sign_in(page, proxy, MASTER_KEY)
    page.click("#tab-accounts")
    page.fill("#account-search", "alice")
    page.press("#account-search", "Enter")
    # the list shows balance, held, available, last activity and the tier of the latest request
    expect(page.locator("#accounts-list tr[data-account='user:alice'] td.tier")).to_have_text("professional")
    page.click("#accounts-list tr[data-account='user:alice']")
    page.wait_for_selector("#ledger")
    with proxy.client(ALICE) as c:
        before = c.get("/plugins/credits/balance").json()
    page.fill("#grant-amount", "12.5x")
    page.click("#grant-submit")
    expect(page.locator("#grant-result")).to_contain_text("at most 6 decimals")
    page.fill("#grant-amount", "250")
    page.fill("#grant-note", "console top-up")
    page.click("#grant-submit")
    expect(page.locator("#grant-result")).to_contain_text("Done")
    expect(page.locator("#ledger")).to_contain_text("console top-up")
    page.click("#verify")
    expect(page.locator("#verify-result")).to_contain_text("consistent")
    page.screenshot(path=str(shots / "accounts.png"), full_page=True)
    from decimal import Decimal
    with proxy.client(ALICE) as c:
        after = c.get("/plugins/credits/balance").json()
    assert Decimal(after["balance"]) == Decimal(before["balance"]) + 250
    user = browser.new_context().new_page()
    try:
        sign_in(user, proxy, ALICE)
        user.wait_for_selector("#card-available")
        assert Decimal(user.inner_text("#card-available .stat-value")) == Decimal(after["available"])
    finally:
        user.context.close()
    page.click("#tab-all-usage")
    page.wait_for_selector("#top-accounts tbody tr")
    assert "user:alice" in page.inner_text("#top-accounts")
    page.screenshot(path=str(shots / "all-usage.png"), full_page=True)


def test_admin_grants_promotional_credits_with_an_expiry_and_sees_the_buckets(proxy, browser, shots):
    wait_rows(proxy, ALICE, 1)
    # a fixed time zone: the form's local expiry must reach the API as the same instant in UTC
    context = browser.new_context(viewport={"width": 1360, "height": 1000}, timezone_id="Europe/Berlin")
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        sign_in(page, proxy, MASTER_KEY)
        page.click("#tab-accounts")
        page.fill("#account-search", "alice")
        page.press("#account-search", "Enter")
        page.click("#accounts-list tr[data-account='user:alice']")
        page.wait_for_selector("#buckets tbody tr")
        # spending order: this month's allowance first, the paid balance (never expires) last
        kinds = page.eval_on_selector_all("#buckets tbody tr", "rs => rs.map(r => r.dataset.kind)")
        assert kinds[0] == "allowance" and kinds[-1] == "paid", kinds
        assert page.inner_text("#buckets tbody tr[data-kind=paid] td:last-child") == "never"
        allowance = page.locator("#account-allowance")
        expect(allowance).to_contain_text("tier professional · allowance ")
        expect(allowance).to_contain_text(f"left of {ALLOWANCE} per month, resets ")
        expect(allowance).to_contain_text("day cap 500 (tier)")
        # an expiry in the past: the API's 400 is shown, nothing is granted
        page.fill("#grant-amount", "5")
        page.select_option("#grant-kind", "promotional")
        page.fill("#grant-expires", "2001-01-01T00:00")
        page.click("#grant-submit")
        expect(page.locator("#grant-result")).to_contain_text("in the past")
        assert page.locator("#buckets tbody tr[data-kind=promotional]").count() == 0
        year = time.gmtime().tm_year + 2
        page.fill("#grant-expires", f"{year}-06-01T12:00")  # Berlin summer time: 10:00 UTC
        page.click("#grant-submit")
        expect(page.locator("#grant-result")).to_contain_text("Done: granted 5 promotional credits expiring ")
        promo = page.locator("#buckets tbody tr[data-kind=promotional]")
        expect(promo).to_have_count(1)
        expect(promo.locator("td.num")).to_have_text("5")
        assert promo.locator("td:last-child").inner_text() != "never"
        # the form is back to its defaults, so the next grant is not promotional by accident
        assert page.input_value("#grant-kind") == "paid" and page.input_value("#grant-expires") == ""
        page.screenshot(path=str(shots / "accounts-buckets.png"), full_page=True)
        with proxy.client(ALICE) as c:
            buckets = c.get("/plugins/credits/balance").json()["buckets"]
        promos = [b for b in buckets if b["kind"] == "promotional"]
        assert [(b["remaining"], b["expires_at"]) for b in promos] == [("5.000000", f"{year}-06-01T10:00:00Z")]
        assert not errors, errors
    finally:
        context.close()


def test_health_board_shows_a_failing_deployment_down(proxy, page, fake, shots):
    fake.provider.fail(500, models={"gpt-4.1"})
    for _ in range(4):
        chat(proxy, MASTER_KEY, model="gpt-4.1")
    sign_in(page, proxy, MASTER_KEY)
    page.click("#tab-health")
    row = "#health-board tr[data-model-id][data-status=down]"
    deadline = time.time() + 15
    while page.locator(row).count() == 0 and time.time() < deadline:
        page.click("#health-refresh")
        page.wait_for_timeout(500)
    down = page.locator(row)
    assert down.count() == 1 and "gpt-4.1" in down.inner_text()
    # the others are not down: healthy once probed or served, `unknown` until there is evidence
    assert page.locator("#health-board tr[data-status=healthy], #health-board tr[data-status=unknown]").count() > 0
    page.screenshot(path=str(shots / "health.png"))
    page.check("#health-problems")  # only what is not healthy
    expect(page.locator("#health-board tr[data-model-id]")).to_have_count(1)
    down = page.locator(row)
    down.locator("summary").click()
    page.screenshot(path=str(shots / "health-problems.png"))
    # force up needs a reason; then it is audited
    down.locator("button[data-force=up]").click()
    assert "reason is required" in down.locator(".row-status").inner_text().lower()
    down.locator("input.reason").fill("provider confirmed fixed")
    down.locator("button[data-force=up]").click()
    expect(page.locator("#health-audit")).to_contain_text("provider confirmed fixed")
    page.wait_for_selector("#health-board tr[data-status=forced_up]")


def test_a_model_name_with_html_renders_as_text(proxy, page):
    with proxy.client(MASTER_KEY) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "model": HTML_MODEL})
    assert r.status_code == 200, r.text
    sign_in(page, proxy, MASTER_KEY)
    page.click("#tab-all-usage")
    page.wait_for_selector("#requests-table tbody tr")
    cell = page.locator("#requests-table td.model", has_text="evil").first
    assert cell.inner_text() == HTML_MODEL
    assert page.locator("#requests-table img, #requests-table b").count() == 0
    assert page.evaluate("window.__xss") is None
    page.wait_for_selector("#panel-provider[data-state=ready]")
    options = page.eval_on_selector_all("#filter-model option", "os => os.map(o => o.value)")
    assert HTML_MODEL in options


# ---- the API the console uses, through the same real proxy --------------------------------------

CAROL = "sk-console-carol"
CAROL_ECO_KEY = "sk-console-carol-eco"


def routed_level(proxy, key: str, model: str = "auto", headers: dict | None = None, **body) -> str:
    with proxy.client(key) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "model": model, **body}, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.headers["x-litellm-plugins-power-level"]


def put_default(proxy, key: str, level, **extra) -> httpx.Response:
    with proxy.client(key) as c:
        return c.put("/plugins/routing/default-level", json={"default_level": level, **extra})


def test_account_default_level_takes_its_place_in_the_precedence(proxy, keys):
    keys.add(CAROL, user_id="carol", metadata={"tier": "professional"})  # tier default: balanced
    keys.add(CAROL_ECO_KEY, user_id="carol", metadata={"tier": "professional", "power_level": "eco"})
    assert routed_level(proxy, CAROL) == "balanced"  # nothing saved: the tier's default
    assert put_default(proxy, CAROL, "precision").json() == {"account": "user:carol", "default_level": "precision"}
    with proxy.client(CAROL) as c:
        assert c.get("/plugins/routing/default-level").json()["default_level"] == "precision"
        assert c.get("/plugins/routing/policy").json()["account_default_level"] == "precision"
    assert routed_level(proxy, CAROL) == "precision"                                   # account default
    assert routed_level(proxy, CAROL, headers={"X-Power-Level": "eco"}) == "eco"       # header beats it
    assert routed_level(proxy, CAROL, power_level="eco") == "eco"                      # body beats it
    assert routed_level(proxy, CAROL_ECO_KEY) == "eco"                                 # key metadata beats it
    assert routed_level(proxy, CAROL, model="balanced") == "balanced"                  # a level as model beats it
    # only levels the tier allows, only your own account, only real levels
    assert put_default(proxy, BOB, "precision").status_code == 403   # starter: eco, balanced
    assert put_default(proxy, BOB, "turbo").status_code == 400
    assert put_default(proxy, BOB, "eco", account="user:carol").status_code == 403
    bad = put_default(proxy, BOB, "eco", colour="red")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "colour"
    assert routed_level(proxy, CAROL) == "precision"  # untouched by bob's attempts
    assert put_default(proxy, CAROL, None).status_code == 200
    assert routed_level(proxy, CAROL) == "balanced"  # cleared: back to the tier's default


def test_quote_prices_every_allowed_level_like_the_real_hold(proxy, keys):
    keys.add(CAROL, user_id="carol", metadata={"tier": "professional"})
    body = {"max_tokens": 40, "messages": [{"role": "user", "content": "price me " * 50}]}
    with proxy.client(CAROL) as c:
        quote = c.post("/plugins/routing/quote", json=body).json()
        assert c.post("/plugins/routing/quote", json={"messages": "no"}).status_code == 400
    from decimal import Decimal
    assert quote["tier"] == "professional" and [lv["level"] for lv in quote["levels"]] == ["eco", "balanced", "precision"]
    assert quote["output_tokens"] == 40 and quote["prompt_tokens_estimate"] > 0
    for lv in quote["levels"]:
        assert lv["model_group"] and Decimal(lv["hold"]) >= Decimal(lv["expected"]) > 0
        assert lv["candidates"][0]["available"]  # healthy first
    with proxy.client(CAROL) as c:
        for lv in quote["levels"]:
            r = c.post("/v1/chat/completions", json={**body, "model": lv["level"]})
            assert r.status_code == 200, r.text
            assert r.headers["x-litellm-plugins-model-group"] == lv["model_group"]
            # the quote's worst case is exactly the hold credits placed for the same body
            assert Decimal(r.headers["x-litellm-plugins-credits-held"]) == Decimal(lv["hold"]), lv
    wait_rows(proxy, CAROL, 3)
    with proxy.client(CAROL) as c:
        again = c.post("/plugins/routing/quote", json=body).json()
    assert again["recent"]["requests"] >= 3 and again["levels"][0]["recent_expected"] is not None


def test_dashboard_aggregates_equal_the_rows(proxy):
    rows = wait_rows(proxy, ALICE, 5)
    from decimal import Decimal
    with proxy.client(ALICE) as c:
        dash = c.get("/plugins/usage/dashboard", params={"bucket": "hour"}).json()
        assert c.get("/plugins/usage/dashboard", params={"bucket": "minute"}).status_code == 400
    total = sum(Decimal(r["credits_charged"]) for r in rows)
    assert dash["account"] == "user:alice" and "top_accounts" not in dash
    assert dash["totals"]["requests"] == len(rows) == sum(p["requests"] for p in dash["series"])
    assert Decimal(dash["totals"]["credits_charged"]) == total
    assert sum(Decimal(g["credits_charged"]) for g in dash["by_level"]) == total
    assert dash["totals"]["byok_requests"] == sum(1 for r in rows if r["byok"])
    with proxy.client(MASTER_KEY) as c:
        everyone = c.get("/plugins/usage/dashboard").json()
        accounts = c.get("/plugins/credits/accounts", params={"search": "ALI"}).json()["accounts"]
    assert everyone["account"] is None and {"user:alice", "user:carol"} <= {a["key"] for a in everyone["top_accounts"]}
    assert [a["account"] for a in accounts] == ["user:alice"] and accounts[0]["last_activity"]


def test_level_chooser_shows_estimates_and_saves_the_default(proxy, page, shots):
    sign_in(page, proxy, ALICE)
    page.click("#tab-levels")
    page.wait_for_selector("#levels .level")
    assert page.locator("#levels .level").count() == 3  # professional: eco, balanced, precision
    precision = page.locator(".level[data-level=precision]")
    assert "credits" in precision.locator(".hold").inner_text()
    assert precision.locator(".chosen").inner_text() == "claude-sonnet-4"
    precision.locator("input[name=default-level]").check()
    page.click("#level-save")
    expect(page.locator("#level-save-status")).to_contain_text("auto now means precision")
    page.screenshot(path=str(shots / "levels.png"), full_page=True)
    try:
        assert routed_level(proxy, ALICE, model="auto") == "precision"
    finally:
        assert put_default(proxy, ALICE, None).status_code == 200
