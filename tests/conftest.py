"""Fixtures: real Postgres/Redis (throwaway per run), the fake provider, real proxy processes."""

from __future__ import annotations

import os

# Before anything imports litellm: never fetch the price map from the internet in tests.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_billing import FakeBilling, FakeBillingServer
from tests.support.fake_provider import FakeProviderServer
from tests.support.proxy import KeyFile, ProxyProcess, test_config
from tests.support.private_services import private_postgres, private_redis
from tests.support.services import REDIS_URL, redis_prefix, throwaway_database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a real proxy ``e2e``: the set .ci/run also runs on the lowest
    supported LiteLLM release (``LITELLM_VERSION=1.102.4 scripts/test -m e2e``)."""
    for item in items:
        if "start_proxy" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A failing test says which proxy died by itself (exit code, log tail): a dead proxy shows up
    only as ``Connection refused`` otherwise, and its log is gone with the CI machine's temp dir."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proxy in ProxyProcess.started:
            crash = proxy.crash_report()
            if crash:
                report.sections.append((f"proxy {proxy.name} crashed", crash))


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeProviderServer]:
    server = FakeProviderServer()
    server.up()
    yield server
    server.down()


@pytest.fixture
def fake(fake_server: FakeProviderServer) -> Iterator[FakeProviderServer]:
    """The fake provider with a clean record and no failures for this test."""
    fake_server.provider.reset()
    fake_server.up()
    yield fake_server
    fake_server.up()
    fake_server.provider.reset()


@pytest.fixture(scope="module")
def billing_receiver() -> Iterator[FakeBillingServer]:
    """The fake billing receiver (Lago / OpenMeter / Stripe / webhooks) for a module."""
    server = FakeBillingServer()
    server.up()
    yield server
    server.down()


@pytest.fixture
def billing(billing_receiver: FakeBillingServer) -> Iterator[FakeBilling]:
    """The fake billing receiver up, with a clean record and no faults for this test."""
    billing_receiver.up()
    billing_receiver.billing.reset()
    yield billing_receiver.billing
    billing_receiver.up()
    billing_receiver.billing.reset()


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with throwaway_database() as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def module_database() -> AsyncIterator[str]:
    async with throwaway_database() as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def module_redis_prefix() -> AsyncIterator[str]:
    async with redis_prefix() as prefix:
        yield prefix


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def keys(workdir: Path) -> KeyFile:
    return KeyFile(workdir / "keys.json")


StartProxy = Callable[..., ProxyProcess]


@pytest.fixture(scope="module")
def start_proxy(fake_server: FakeProviderServer, module_database: str, module_redis_prefix: str,
                workdir: Path, keys: KeyFile) -> Iterator[StartProxy]:
    """Start real ``litellm`` processes sharing this module's Postgres database and Redis prefix.

    ``start_proxy(plugins={...}, overrides={...}, name=..., num_workers=...)``; every process is
    stopped when the module ends. Call it twice for two proxies on the same Postgres/Redis.
    """
    started: list[ProxyProcess] = []
    # BYOK is on in the shipped config and refuses to start without a key: one stable key per module
    # (both proxies of a module must share it to read each other's rows); a test may pass its own.
    from cryptography.fernet import Fernet
    byok_key = Fernet.generate_key().decode()

    def start(plugins: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
              name: str | None = None, num_workers: int = 1, wait: bool = True,
              env: dict[str, str] | None = None, with_plugins: bool = True,
              native_wire: tuple[str, ...] = ()) -> ProxyProcess:
        config_overrides = dict(overrides or {})
        if plugins:
            config_overrides["litellm_plugins"] = {**config_overrides.get("litellm_plugins", {}),
                                                  **plugins}
        config_overrides.setdefault("litellm_plugins", {})
        config_overrides["litellm_plugins"].setdefault("redis_key_prefix", module_redis_prefix)
        config = test_config(fake_server.base_url, config_overrides, native_wire=native_wire)
        proxy_env = {
            "LITELLM_PLUGINS_DATABASE_URL": module_database,
            "LITELLM_PLUGINS_REDIS_URL": REDIS_URL,
            "LITELLM_PLUGINS_TEST_KEYS": str(keys.path),
            "LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS": byok_key,
            **(env or {}),
        }
        proxy = ProxyProcess(config, workdir, proxy_env, name=name or f"proxy{len(started)}",
                             num_workers=num_workers, plugins=with_plugins)
        started.append(proxy)
        return proxy.start(wait=wait)

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def pg():
    """A private Postgres cluster for this module: tests may stop and restart it."""
    with private_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def rds():
    """A private Redis for this module: tests may FLUSHALL, stop and restart it."""
    with private_redis() as server:
        yield server
