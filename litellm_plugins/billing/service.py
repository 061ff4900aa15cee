"""What the API, ``/plugins/ready`` and the CLI share: status and dead letters, with JSON-ready values."""

from __future__ import annotations

from typing import Any

from litellm_plugins.billing import store
from litellm_plugins.core.runtime import Runtime
from litellm_plugins.credits.money import fmt


def unknown_exporter(rt: Runtime, name: str) -> str | None:
    """The error message for an exporter name that is not configured, else None."""
    names = [e.name for e in rt.settings.billing.exporters]
    if name in names:
        return None
    return f"unknown exporter {name!r} (configured: {', '.join(names) or 'none'})"


async def status(rt: Runtime) -> dict[str, dict[str, Any]]:
    from litellm_plugins.billing.hook import workers  # the workers of this process, if started
    exporters = rt.settings.billing.exporters
    async with rt.pool.acquire(timeout=5.0) as conn:
        lag = await store.lag(conn, [e.name for e in exporters])
    running = workers()
    return {e.name: {"type": e.type, "enabled": e.enabled, **lag[e.name],
                     **(running[e.name].describe() if e.name in running else {})} for e in exporters}


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "exporter": row["exporter"], "event_id": row["event_id"], "seq": row["seq"],
            "account": row["account"], "kind": row["kind"], "credits": fmt(row["units"]),
            "event_at": row["event_at"].isoformat() if row["event_at"] else None,  # None: pruned after replay
            "reason": row["reason"], "status": row["status"],
            "created_at": row["created_at"].isoformat(), "updated_at": row["updated_at"].isoformat()}


async def dead_letters(rt: Runtime, exporter: str | None, status_: str | None, limit: int,
                       before_id: int | None) -> list[dict[str, Any]]:
    async with rt.pool.acquire(timeout=5.0) as conn:
        return [_entry(r) for r in await store.dead_letters(conn, exporter, status_, limit, before_id)]


async def request_replay(rt: Runtime, ids: list[int] | None, exporter: str | None) -> int:
    async with rt.pool.acquire(timeout=5.0) as conn:
        return await store.request_replay(conn, ids, exporter)
