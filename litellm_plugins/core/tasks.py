"""Supervised background tasks: restarted when they crash, visible in ``/plugins/ready``.

The old system started its health checker in a task nobody watched; when it died, health went stale
silently. Every long-running job here runs under a supervisor that restarts it with backoff and
reports its state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("litellm_plugins.tasks")

JobFactory = Callable[[], Awaitable[None]]


@dataclass
class TaskState:
    name: str
    restarts: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def describe(self) -> dict[str, object]:
        return {"running": self.running, "restarts": self.restarts, "last_error": self.last_error}


class Supervisor:
    def __init__(self, max_backoff_s: float = 30.0) -> None:
        self._states: dict[str, TaskState] = {}
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._max_backoff_s = max_backoff_s

    def start(self, name: str, job: JobFactory) -> None:
        """Run ``job()`` forever; if it returns or raises, run it again after a backoff."""
        if name in self._states and self._states[name].running:
            return
        state = TaskState(name)
        self._states[name] = state
        state.task = asyncio.get_running_loop().create_task(self._run(state, job), name=f"litellm-plugins:{name}")

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Register a flush to run when the worker shuts down (its loop cancels our tasks)."""
        self._on_stop.append(callback)
        if "_shutdown_watch" not in self._states:
            state = TaskState("_shutdown_watch")
            self._states[state.name] = state
            state.task = asyncio.get_running_loop().create_task(self._watch_shutdown())

    async def _run(self, state: TaskState, job: JobFactory) -> None:
        backoff = 0.5
        while True:
            try:
                await job()
                state.last_error = "job returned"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a supervisor must survive any job failure
                state.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("background task %s crashed; restarting in %.1fs", state.name, backoff)
            state.restarts += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _watch_shutdown(self) -> None:
        # asyncio.run() cancels leftover tasks at shutdown and waits for them: that is our cue to flush.
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self) -> None:
        callbacks, self._on_stop = self._on_stop, []
        for callback in callbacks:
            try:
                await callback()
            except Exception:  # noqa: BLE001
                log.exception("shutdown flush failed")
        for state in self._states.values():
            if state.task is not None and state.task is not asyncio.current_task():
                state.task.cancel()

    def describe(self) -> dict[str, dict[str, object]]:
        return {name: s.describe() for name, s in self._states.items() if not name.startswith("_")}

    @property
    def healthy(self) -> bool:
        return all(s.running for name, s in self._states.items() if not name.startswith("_"))
