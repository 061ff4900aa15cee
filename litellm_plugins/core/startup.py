"""Worker startup: validate settings, connect, migrate, mount routes, start background jobs.

LiteLLM runs ``LITELLM_WORKER_STARTUP_HOOKS=litellm_plugins.core.startup:start`` once per worker,
inside its lifespan and before it loads the config. Raising here stops the proxy, which is what we
want for bad settings or unreachable services: fail at boot with one clear line, not on the first
user request.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from types import ModuleType

from fastapi import APIRouter

from litellm_plugins.core import catalog, runtime
from litellm_plugins.core.db import DatabaseUnavailable, create_pool
from litellm_plugins.core.migrator import MigrationError, migrate
from litellm_plugins.core.migrator import status as migration_status
from litellm_plugins.core.redis import RedisUnavailable, check, create_client
from litellm_plugins.core.routes import mount
from litellm_plugins.core.settings import PluginSettings, SettingsError, load_settings
from litellm_plugins.core.versions import UnsupportedLiteLLM, check_litellm

log = logging.getLogger("litellm_plugins")

# Each capability is independent; the guard starts first so its middleware is in place before the
# others mount anything, and its hook must come first in `callbacks` (check_callbacks). Metrics
# starts next: the others count through it from their own start on.
CAPABILITIES = ("guard", "metrics", "health", "routing", "byok", "credits", "billing")
# Capabilities with no LiteLLM hook (background jobs and routes only): no callbacks entry needed.
HOOKLESS = frozenset({"billing"})


EXIT_STARTUP_REFUSED = 3


def hook_path(capability: str) -> str:
    return f"litellm_plugins.{capability}.{capability}_hook"


def _optional_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def check_callbacks(settings: PluginSettings, config: dict) -> None:
    """An enabled capability whose hook is not registered would silently do nothing: refuse."""
    callbacks = (config.get("litellm_settings") or {}).get("callbacks") or []
    for capability in CAPABILITIES:
        if capability in HOOKLESS:
            continue
        if getattr(settings, capability).enabled and hook_path(capability) not in callbacks:
            raise SettingsError(
                f"litellm_plugins.{capability}.enabled is true but {hook_path(capability)} is not "
                "listed in litellm_settings.callbacks")
    if settings.guard.enabled:
        ours = [c for c in callbacks if isinstance(c, str) and c.startswith("litellm_plugins.")]
        if ours and ours[0] != hook_path("guard"):
            raise SettingsError(
                f"{hook_path('guard')} must be the first litellm_plugins entry of litellm_settings.callbacks "
                "(it refuses malformed requests before routing, BYOK and credits see them)")


def validate_capabilities(settings: PluginSettings, config: dict) -> None:
    """Cross-checks that need the whole config (e.g. model groups named in a policy exist)."""
    for capability in CAPABILITIES:
        section = getattr(settings, capability)
        if section.enabled and hasattr(section, "check_config"):
            section.check_config(config)


async def build_runtime() -> runtime.Runtime:
    check_litellm()  # first: nothing below is known to behave on an untested LiteLLM
    settings, config = load_settings()
    check_callbacks(settings, config)
    validate_capabilities(settings, config)
    pool = await create_pool(settings.database_url, settings.db_pool_min_size, settings.db_pool_max_size)
    async with pool.acquire() as conn:
        if settings.migrate_on_startup:
            applied = await migrate(conn)
            if applied:
                log.warning("litellm-plugins: applied migrations %s", ", ".join(applied))
        else:
            state = await migration_status(conn)
            if not state.current:
                raise MigrationError(
                    f"database is missing migrations {', '.join(state.pending)}: run `litellm-plugins migrate`")
    redis = create_client(settings.redis_url)
    await check(redis, settings.redis_url)
    return runtime.Runtime(settings=settings, config=config, pool=pool, redis=redis)


async def start() -> None:
    try:
        rt = await build_runtime()
    except (UnsupportedLiteLLM, SettingsError, DatabaseUnavailable, RedisUnavailable, MigrationError) as exc:
        # One clear line and a non-zero exit: Starlette would wrap any exception raised here in a
        # traceback that buries the only sentence the operator needs.
        print(f"litellm-plugins: startup refused: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_STARTUP_REFUSED)
    runtime.install(rt)
    keyless = catalog.startup_line(rt.config)
    if keyless:
        log.warning(keyless)
    from litellm.proxy.proxy_server import app

    routers: list[APIRouter] = []
    for capability in CAPABILITIES:
        if not getattr(rt.settings, capability).enabled:
            continue
        api = _optional_module(f"litellm_plugins.{capability}.api")
        if api is not None:
            routers.append(api.router)
        hook = _optional_module(f"litellm_plugins.{capability}.hook")
        if hook is not None and hasattr(hook, "start"):
            await hook.start(rt)
    if rt.settings.console.enabled:  # static page + assets only; it reads the API above like any client
        from litellm_plugins.console.api import router as console_router
        routers.append(console_router)
    mount(app, routers)
    log.info("litellm-plugins started: %s", ", ".join(
        c for c in CAPABILITIES if getattr(rt.settings, c).enabled) or "no capabilities enabled")
