"""Health history in Postgres: status changes, probe results, operator audit; uptime and percentiles.

Redis holds the *current* state (fast, shared); Postgres holds what happened (durable, queryable).
Nothing here runs on the request path: writes come from logging callbacks (after the response),
the prober and the admin API.

Uptime over a window is the share of time a deployment was *up* according to its status-change
timeline (``health_events``): the state at the window start is the last change before it, and a
deployment's history starts at its first recorded event (written when it is first seen), so a
deployment added yesterday is not "down" for the 29 days before it existed. Down = circuit open or
half-open (not yet proven healthy) or forced down. Latency percentiles come from successful probes
(``percentile_cont``, i.e. linear interpolation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

WINDOWS: dict[str, timedelta] = {"24h": timedelta(hours=24), "7d": timedelta(days=7),
                                 "30d": timedelta(days=30)}


@dataclass(frozen=True)
class Event:
    at: datetime
    up: bool


def uptime_percent(events: Sequence[Event], start: datetime, end: datetime) -> float | None:
    """Percentage of [start, end] the deployment was up, given its timeline sorted by time.

    ``events`` must include the last event at or before ``start`` when there is one. Time before the
    first event is not counted (the deployment was not known yet). None when nothing is covered.
    """
    if not events or end <= start:
        return None
    covered_from = max(start, events[0].at)
    if covered_from >= end:
        return None
    up_seconds = 0.0
    for i, event in enumerate(events):
        seg_start = max(event.at, covered_from)
        seg_end = min(events[i + 1].at if i + 1 < len(events) else end, end)
        if seg_end > seg_start and event.up:
            up_seconds += (seg_end - seg_start).total_seconds()
    return round(100.0 * up_seconds / (end - covered_from).total_seconds(), 4)


async def record_event(pool: asyncpg.Pool, model_id: str, model_group: str, provider: str,
                       state: str, up: bool, reason: str | None) -> None:
    await pool.execute(
        "INSERT INTO health_events (model_id, model_group, provider, state, up, reason) "
        "VALUES ($1, $2, $3, $4, $5, $6)", model_id, model_group, provider, state, up, reason)


async def record_first_seen(pool: asyncpg.Pool, deployments: Iterable[tuple[str, str, str]]) -> int:
    """Start the timeline of deployments that have none (``closed``, up). Returns rows written."""
    rows = list(deployments)
    if not rows:
        return 0
    result = await pool.execute(
        "INSERT INTO health_events (model_id, model_group, provider, state, up, reason) "
        "SELECT d.model_id, d.model_group, d.provider, 'closed', true, 'first seen' "
        "FROM unnest($1::text[], $2::text[], $3::text[]) AS d(model_id, model_group, provider) "
        "WHERE NOT EXISTS (SELECT 1 FROM health_events e WHERE e.model_id = d.model_id)",
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    return int(result.split()[-1])


async def record_probes(pool: asyncpg.Pool, prober: str,
                        results: Sequence[tuple[str, str, str, bool, int | None, int | None, str | None]]
                        ) -> None:
    """``results``: (model_id, model_group, provider, ok, latency_ms, status_code, error)."""
    if results:
        await pool.executemany(
            "INSERT INTO health_probes (model_id, model_group, provider, prober, ok, latency_ms, "
            "status_code, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [(r[0], r[1], r[2], prober, r[3], r[4], r[5], r[6]) for r in results])


async def record_audit(pool: asyncpg.Pool, model_id: str, action: str, reason: str, actor: str) -> None:
    await pool.execute("INSERT INTO health_audit (model_id, action, reason, actor) VALUES ($1, $2, $3, $4)",
                       model_id, action, reason, actor)


async def current_overrides(pool: asyncpg.Pool) -> dict[str, tuple[str, str, str]]:
    """Each deployment's latest operator decision: model_id -> (forced "down"|"up"|"", reason, actor)."""
    rows = await pool.fetch(
        "SELECT DISTINCT ON (model_id) model_id, action, reason, actor FROM health_audit "
        "WHERE action IN ('force_down', 'force_up', 'auto') ORDER BY model_id, at DESC, id DESC")
    return {r["model_id"]: (r["action"].removeprefix("force_") if r["action"] != "auto" else "",
                            r["reason"], r["actor"]) for r in rows}


async def audit_log(pool: asyncpg.Pool, model_id: str | None, limit: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT model_id, action, reason, actor, at FROM health_audit "
        "WHERE $1::text IS NULL OR model_id = $1 ORDER BY at DESC, id DESC LIMIT $2", model_id, limit)
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]


async def prune(pool: asyncpg.Pool, retention_days: int) -> None:
    """Drop history older than the retention, keeping each deployment's last event before the cut
    (it is the state at the start of the oldest window)."""
    cut = datetime.now(timezone.utc) - timedelta(days=retention_days)
    await pool.execute("DELETE FROM health_probes WHERE at < $1", cut)
    await pool.execute(
        "DELETE FROM health_events e WHERE e.at < $1 AND e.id <> ("
        " SELECT id FROM health_events l WHERE l.model_id = e.model_id AND l.at < $1"
        " ORDER BY l.at DESC, l.id DESC LIMIT 1)", cut)


async def history(pool: asyncpg.Pool, model_ids: Sequence[str],
                  now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per deployment: ``uptime`` {24h, 7d, 30d} (percent or None) and 24 h probe latency p50/p95 (ms)."""
    now = now or datetime.now(timezone.utc)
    longest = now - max(WINDOWS.values())
    ids = list(model_ids)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "(SELECT model_id, at, up, id FROM health_events WHERE model_id = ANY($1) AND at > $2 AND at <= $3)"
            " UNION ALL "
            "(SELECT DISTINCT ON (model_id) model_id, at, up, id FROM health_events "
            " WHERE model_id = ANY($1) AND at <= $2 ORDER BY model_id, at DESC, id DESC)"
            " ORDER BY model_id, at, id", ids, longest, now)
        latency = await conn.fetch(
            "SELECT model_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50, "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95, count(*) AS n "
            "FROM health_probes WHERE model_id = ANY($1) AND ok AND latency_ms IS NOT NULL "
            "AND at > $2 AND at <= $3 GROUP BY model_id", ids, now - WINDOWS["24h"], now)
    timelines: dict[str, list[Event]] = {m: [] for m in ids}
    for row in rows:
        timelines[row["model_id"]].append(Event(row["at"], row["up"]))
    out: dict[str, dict[str, Any]] = {}
    for model_id, events in timelines.items():
        uptime = {}
        for name, span in WINDOWS.items():
            start = now - span
            # the last event at or before this window's start, then everything after it
            first = 0
            for i, event in enumerate(events):
                if event.at <= start:
                    first = i
            uptime[name] = uptime_percent(events[first:], start, now)
        out[model_id] = {"uptime": uptime, "latency_p50_ms": None, "latency_p95_ms": None,
                         "probe_samples_24h": 0}
    for row in latency:
        out[row["model_id"]].update(latency_p50_ms=round(row["p50"], 3), latency_p95_ms=round(row["p95"], 3),
                                    probe_samples_24h=row["n"])
    return out
