"""The per-worker resources every capability shares, created once by :mod:`core.startup`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
import redis.asyncio as aioredis

from litellm_plugins.core.tasks import Supervisor

if TYPE_CHECKING:  # settings import every capability's settings module; keep runtime import-light
    from litellm_plugins.core.settings import PluginSettings


@dataclass
class Runtime:
    settings: PluginSettings
    config: dict[str, Any]
    pool: asyncpg.Pool
    redis: aioredis.Redis
    tasks: Supervisor = field(default_factory=Supervisor)
    # Extra sections of ``/plugins/ready`` (e.g. billing's backlog): informative, never readiness itself.
    readiness: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)


_current: Runtime | None = None


class NotStarted(RuntimeError):
    pass


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def get() -> Runtime:
    if _current is None:
        raise NotStarted(
            "litellm-plugins is not started in this worker: set "
            "LITELLM_WORKER_STARTUP_HOOKS=litellm_plugins.core.startup:start")
    return _current


def current() -> Runtime | None:
    return _current
