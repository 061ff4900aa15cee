"""Worker startup of the billing capability (no LiteLLM hook: nothing here runs per request).

Named ``hook.py`` like every capability's entry point so ``core.startup`` finds ``start``; billing
is listed in ``core.startup.HOOKLESS``, so it needs no ``litellm_settings.callbacks`` entry.
"""

from __future__ import annotations

import time

from litellm_plugins.billing.exporters import build
from litellm_plugins.billing.worker import ExportWorker
from litellm_plugins.core.runtime import Runtime

_workers: dict[str, ExportWorker] = {}
READY_FIELDS = ("backlog", "lag_seconds", "dead_letters")


def workers() -> dict[str, ExportWorker]:
    return _workers


async def start(rt: Runtime) -> None:
    settings = rt.settings.billing
    rt.readiness["billing"] = lambda: ready_report(rt)
    for exporter_settings in settings.exporters:
        if not exporter_settings.enabled or exporter_settings.name in _workers:
            continue
        worker = ExportWorker(rt, settings, build(exporter_settings))
        _workers[worker.name] = worker
        rt.tasks.start(f"billing.{worker.name}", worker.run_forever)


_ready_cache: dict[str, tuple[float, dict[str, dict[str, object]]]] = {}
READY_CACHE_SECONDS = 5.0


async def ready_report(rt: Runtime) -> dict[str, dict[str, object]]:
    """``/plugins/ready`` is unauthenticated: counts per exporter only (backlog, lag, dead letters).

    Kept for ``READY_CACHE_SECONDS`` per worker: orchestrators poll readiness often, and counting a
    large backlog is a scan of the outbox index."""
    from litellm_plugins.billing import service
    cached = _ready_cache.get("report")
    if cached and time.monotonic() - cached[0] < READY_CACHE_SECONDS:
        return cached[1]
    report = {name: {k: v for k, v in state.items() if k in READY_FIELDS}
              for name, state in (await service.status(rt)).items()}
    _ready_cache["report"] = (time.monotonic(), report)
    return report
