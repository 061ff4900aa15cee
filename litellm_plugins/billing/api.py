"""``/plugins/billing/...`` (admin only): export status, the dead-letter list and its replay.

Nothing here shows a receiver's URL credentials or API key: exporters are named, typed and counted.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query

from litellm_plugins.billing import service
from litellm_plugins.core import runtime
from litellm_plugins.core.errors import bad_request
from litellm_plugins.core.routes import admin_caller

router = APIRouter(prefix="/plugins/billing", tags=["litellm-plugins: billing"],
                   dependencies=[Depends(admin_caller)])


@router.get("/status")
async def get_status() -> dict[str, Any]:
    """Per exporter: backlog (events not yet acknowledged), lag (age of the oldest), exported,
    dead letters, and whether this worker is its sender."""
    return {"exporters": await service.status(runtime.get())}


@router.get("/dead-letters")
async def get_dead_letters(exporter: str | None = Query(default=None, max_length=64),
                           status: Literal["dead", "replay", "replayed"] | None = Query(default=None),
                           limit: int = Query(default=100, ge=1, le=1000),
                           before_id: int | None = Query(default=None, ge=1)) -> dict[str, Any]:
    rt = runtime.get()
    if exporter is not None:
        if (problem := service.unknown_exporter(rt, exporter)):
            bad_request(problem, "exporter")
    entries = await service.dead_letters(rt, exporter, status, limit, before_id)
    return {"entries": entries, "next_before_id": entries[-1]["id"] if len(entries) == limit else None}


@router.post("/dead-letters/replay")
async def post_replay(body: Any = Body(default=None)) -> dict[str, Any]:
    """Queue dead letters for sending again: ``{"ids": [...]}`` and/or ``{"exporter": name}``
    (every dead letter of that exporter). The exporter sends them before its next new batch."""
    if not isinstance(body, dict) or not set(body) <= {"ids", "exporter"} or not body:
        bad_request('body must be {"ids": [id, ...]} and/or {"exporter": name}')
    ids = body.get("ids")
    if ids is not None and (not isinstance(ids, list) or not ids or len(ids) > 10_000
                            or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)):
        bad_request("ids must be a non-empty list of dead-letter ids (positive integers)", "ids")
    exporter = body.get("exporter")
    rt = runtime.get()
    if exporter is not None:
        if not isinstance(exporter, str):
            bad_request("exporter must be an exporter name", "exporter")
        if (problem := service.unknown_exporter(rt, exporter)):
            bad_request(problem, "exporter")
    return {"queued": await service.request_replay(rt, ids, exporter)}
