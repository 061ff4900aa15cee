"""BYOK pieces on their own: encryption, settings and startup refusal, the vault's SQL (rotation,
first use per day), the cache's invalidation race, the fallback entry."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from cryptography.fernet import Fernet

from litellm_plugins.byok import store
from litellm_plugins.byok.crypto import Cipher, VaultKeyError, fingerprint, mask
from litellm_plugins.byok.hook import FALLBACK_MARKER, _add_platform_fallback
from litellm_plugins.byok.providers import configured_providers, group_providers, provider_of
from litellm_plugins.byok.settings import ByokSettings
from litellm_plugins.core.errors import SettingsError
from litellm_plugins.core.migrator import migrate
from litellm_plugins.core.settings import parse_settings

K1, K2, K3 = (Fernet.generate_key().decode() for _ in range(3))
MODEL_LIST = {"model_list": [
    {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "x"}},
    {"model_name": "tog", "litellm_params": {"model": "together_ai/meta-llama/x", "api_base": "http://h/v1/"}},
]}


# ---- crypto --------------------------------------------------------------------------------------

def test_cipher_encrypts_with_newest_and_decrypts_with_any() -> None:
    old = Cipher([K1])
    token = old.encrypt("sk-secret-value-1234")
    assert "sk-secret" not in token
    rolled = Cipher([K2, K1])
    assert rolled.decrypt(token) == "sk-secret-value-1234"
    rotated = rolled.reencrypt(token)
    assert Cipher([K2]).decrypt(rotated) == "sk-secret-value-1234"
    with pytest.raises(VaultKeyError):
        Cipher([K2]).decrypt(token)
    assert rolled.current_key_id == fingerprint(K2) != fingerprint(K1)
    assert K1 not in repr(rolled) and K2 not in repr(rolled)
    assert mask("sk-secret-value-1234") == "…1234" and mask("short") == "…"


# ---- settings and startup ------------------------------------------------------------------------

def test_enabled_without_key_is_refused_naming_the_key() -> None:
    with pytest.raises(SettingsError, match=r"^litellm_plugins\.byok\.encryption_keys: BYOK is enabled"):
        ByokSettings(enabled=True).check_config(MODEL_LIST)


def test_invalid_key_is_refused_by_index_without_echoing_it() -> None:
    settings = ByokSettings(enabled=True, encryption_keys=f"{K1}, not-a-fernet-key")
    assert len(settings.encryption_keys) == 2
    with pytest.raises(SettingsError) as err:
        settings.check_config(MODEL_LIST)
    assert str(err.value).startswith("litellm_plugins.byok.encryption_keys[1]: not a valid Fernet key")
    assert "not-a-fernet-key" not in str(err.value)
    assert K1 not in repr(settings) and K1 not in str(settings.model_dump())
    ByokSettings(enabled=True, encryption_keys=[K2, K1]).check_config(MODEL_LIST)  # valid: no error


def test_unset_environment_variable_names_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BYOK_TEST_UNSET_VAR", raising=False)
    with pytest.raises(SettingsError, match="litellm_plugins.byok.encryption_keys: environment variable "
                                            "BYOK_TEST_UNSET_VAR is not set"):
        parse_settings({"database_url": "postgresql://x", "redis_url": "redis://x",
                        "byok": {"enabled": True, "encryption_keys": "os.environ/BYOK_TEST_UNSET_VAR"}})
    with pytest.raises(SettingsError, match=r"litellm_plugins\.account_order"):
        parse_settings({"database_url": "postgresql://x", "redis_url": "redis://x",
                        "account_order": ["user", "user"]})


@pytest.mark.parametrize("case", ["missing", "invalid"])
def test_proxy_refuses_to_start(start_proxy, case: str) -> None:  # noqa: ANN001
    if case == "missing":
        proxy = start_proxy(plugins={"byok": {"enabled": True, "encryption_keys": []}}, wait=False,
                            name="byok_no_key")
        expected = "litellm_plugins.byok.encryption_keys: BYOK is enabled but no encryption key is set"
    else:
        proxy = start_proxy(plugins={"byok": {"enabled": True, "encryption_keys": "os.environ/BYOK_BAD_KEY"}},
                            env={"BYOK_BAD_KEY": "definitely-not-a-fernet-key"}, wait=False, name="byok_bad_key")
        expected = "litellm_plugins.byok.encryption_keys[0]: not a valid Fernet key"
    assert proxy.wait_exit(timeout=90) == 3
    log = proxy.log_text()
    assert f"litellm-plugins: startup refused: {expected}" in log
    assert "definitely-not-a-fernet-key" not in log


# ---- providers and the fallback entry ------------------------------------------------------------

def test_providers_come_from_model_list() -> None:
    providers = configured_providers(MODEL_LIST)
    assert set(providers) == {"openai", "together_ai"}
    assert providers["together_ai"].api_base == "http://h/v1"
    assert providers["openai"].api_base == "https://api.openai.com/v1"
    assert group_providers(MODEL_LIST) == {"gpt": frozenset({"openai"}), "tog": frozenset({"together_ai"})}
    assert provider_of("openai/claude-x", "openai") == "openai"
    assert provider_of("deepinfra/mistral") == "deepinfra"
    assert provider_of(None) is None


def test_platform_fallback_entry_is_prepended_in_client_side_format() -> None:
    entry = {"model": "g", FALLBACK_MARKER: "g"}
    data: dict = {}
    _add_platform_fallback(data, "g")
    assert data["fallbacks"] == [entry]
    data = {"fallbacks": []}
    _add_platform_fallback(data, "g")
    assert data["fallbacks"] == [entry]
    data = {"fallbacks": ["a", "b"]}  # routing's list of groups: same meaning as {"model": name}
    _add_platform_fallback(data, "g")
    assert data["fallbacks"] == [entry, {"model": "a"}, {"model": "b"}]
    data = {"fallbacks": [{"g": ["a"]}]}  # router-config format: left alone (no BYOK fallback)
    _add_platform_fallback(data, "g")
    assert data["fallbacks"] == [{"g": ["a"]}]


# ---- cache ---------------------------------------------------------------------------------------

def test_cache_never_stores_a_load_that_raced_an_invalidation() -> None:
    cache = store.KeyCache(ttl_s=30)
    key = store.StoredKey("openai", "prefer", "sk-aaaa-bbbb-1234")
    assert "sk-aaaa" not in repr(key)
    token = cache.token("user:a")
    cache.invalidate("user:a")  # a delete lands while the load is in flight
    assert cache.put("user:a", {"openai": key}, token) is False
    assert cache.get("user:a") is None
    assert cache.put("user:a", {"openai": key}, cache.token("user:a")) is True
    assert cache.get("user:a") == {"openai": key}
    token = cache.token("user:b")
    cache.clear()  # rotation / reconnect: every account
    assert cache.put("user:b", {}, token) is False
    short = store.KeyCache(ttl_s=0.01)
    short.put("user:c", {}, short.token("user:c"))
    import time
    time.sleep(0.02)
    assert short.get("user:c") is None


# ---- vault SQL -----------------------------------------------------------------------------------

@pytest.fixture
async def pool(database: str):  # noqa: ANN201
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4,
                                     server_settings={"search_path": "litellm_plugins"})
    yield pool
    await pool.close()


class Interrupted(BaseException):
    """Stands for the operator's Ctrl-C / a killed process in the middle of a batch."""


async def test_rotation_is_resumable_and_skips_undecryptable_rows(pool) -> None:  # noqa: ANN001
    old = Cipher([K1])
    for n in range(5):
        await store.put_key(pool, old, f"user:u{n}", "openai", f"sk-user-{n}-secret-value", "prefer", f"user:u{n}")
    await store.put_key(pool, Cipher([K3]), "user:zz-lost", "openai", "sk-lost-secret-value", "only", "user:zz-lost")
    rolled = Cipher([K2, K1])

    calls = 0
    real = rolled.reencrypt

    def flaky(token: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 4:  # the first batch of 2 is committed, the second is not
            raise Interrupted
        return real(token)

    rolled.reencrypt = flaky  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        await store.rotate(pool, rolled, batch_size=2)
    done = await pool.fetchval("SELECT count(*) FROM byok_keys WHERE enc_key_id = $1", rolled.current_key_id)
    assert done == 2

    rolled.reencrypt = real  # type: ignore[method-assign]
    rotated, failed = await store.rotate(pool, rolled, batch_size=2)
    assert (rotated, failed) == (3, 1)  # the K3 row cannot be decrypted: reported, not looped on
    new_only = Cipher([K2])
    for n in range(5):
        keys = await store.load_account(pool, new_only, f"user:u{n}")
        assert keys["openai"].secret == f"sk-user-{n}-secret-value"
    lost = await store.load_account(pool, new_only, "user:zz-lost")
    assert lost["openai"].secret is None and lost["openai"].policy == "only"  # policy still enforced
    assert await store.rotate(pool, rolled) == (0, 1)
    audits = await pool.fetchval("SELECT count(*) FROM byok_audit WHERE action = 'rotate'")
    assert audits == 5


async def test_put_replace_delete_and_first_use_once_per_day(pool) -> None:  # noqa: ANN001
    from datetime import datetime, timedelta, timezone
    cipher = Cipher([K1])
    info, replaced = await store.put_key(pool, cipher, "user:a", "openai", "sk-first-key-0001", "prefer", "user:a")
    assert (info.last4, info.policy, replaced) == ("0001", "prefer", False)
    info, replaced = await store.put_key(pool, cipher, "user:a", "openai", "sk-second-key-0002", "only", "user:a")
    assert (info.last4, info.policy, replaced) == ("0002", "only", True)
    assert (await store.load_account(pool, cipher, "user:a"))["openai"].secret == "sk-second-key-0002"

    now = datetime.now(timezone.utc)
    await asyncio.gather(*(store.mark_used(pool, [("user:a", "openai", now + timedelta(seconds=i))])
                           for i in range(5)))
    await store.mark_used(pool, [("user:a", "openai", now + timedelta(days=1))])
    first_uses = await pool.fetch("SELECT detail FROM byok_audit WHERE action = 'first_use' ORDER BY id")
    assert len(first_uses) == 2  # today once (five concurrent flushes), tomorrow once
    assert (await store.get_info(pool, "user:a", "openai")).last_used_at >= now + timedelta(days=1)

    assert await store.delete_key(pool, "user:a", "openai", "user:a") is True
    assert await store.delete_key(pool, "user:a", "openai", "user:a") is False
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM byok_audit ORDER BY id")]
    assert actions == ["add", "replace", "first_use", "first_use", "delete"]
    text = " ".join(str(dict(r)) for r in await pool.fetch("SELECT * FROM byok_audit"))
    assert "sk-first-key" not in text and "sk-second-key" not in text


def test_router_configured_fallbacks_survive_the_request_level_list(monkeypatch: pytest.MonkeyPatch) -> None:
    import litellm.proxy.proxy_server as proxy_server

    class Router:
        fallbacks = [{"g": ["a", "b"]}, {"*": ["z"]}]

    monkeypatch.setattr(proxy_server, "llm_router", Router())
    data: dict = {}
    _add_platform_fallback(data, "g")
    assert data["fallbacks"] == [{"model": "g", FALLBACK_MARKER: "g"}, {"model": "a"}, {"model": "b"}]
    data = {}
    _add_platform_fallback(data, "other")
    assert data["fallbacks"] == [{"model": "other", FALLBACK_MARKER: "other"}, {"model": "z"}]


async def test_postgres_outage_spares_callers_without_keys_but_never_guesses_for_key_holders() -> None:
    import redis.asyncio as aioredis
    from litellm.proxy._types import ProxyException

    from litellm_plugins.byok.hook import Vault
    from tests.support.services import REDIS_URL, redis_prefix

    class DownPool:
        calls = 0

        async def fetch(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
            DownPool.calls += 1
            raise OSError("connection refused")

    async with redis_prefix() as prefix:
        client = aioredis.Redis.from_url(REDIS_URL)

        class Rt:
            settings = parse_settings({"database_url": "postgresql://x", "redis_url": REDIS_URL,
                                       "redis_key_prefix": prefix,
                                       "byok": {"enabled": True, "encryption_keys": K1}})
            config = MODEL_LIST
            pool = DownPool()
            redis = client

        try:
            v = Vault(Rt())
            await v.mark_account("user:holder", True)
            assert await v.keys_for("user:nobody") == {}
            with pytest.raises(ProxyException) as err:
                await v.keys_for("user:holder")
            assert str(err.value.code) == "503"
            await v.mark_account("user:holder", False)
            assert await v.keys_for("user:holder") == {}
            # One key-store attempt per account and retry interval, not one per request.
            v.stale["user:known"] = known = {"openai": store.StoredKey("openai", "prefer", "sk-known")}
            before = DownPool.calls
            for _ in range(3):
                assert await v.keys_for("user:nobody") == {}
                assert await v.keys_for("user:known") == known
            assert DownPool.calls - before == 1   # user:nobody's answer is still cached from above
            await v.invalidate("user:known")   # an invalidation still drops the outage answer
            v.stale["user:known"] = known
            assert await v.keys_for("user:known") == known and DownPool.calls - before == 2
        finally:
            await client.aclose()
