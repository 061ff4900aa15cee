"""``/plugins/usage``: query, streamed JSON/CSV export, summaries. A non-admin key sees only its own."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from litellm_plugins.core import runtime
from litellm_plugins.core.errors import bad_request, forbidden
from litellm_plugins.core.identity import Caller
from litellm_plugins.core.routes import current_caller
from litellm_plugins.credits.money import fmt
from litellm_plugins.usage import store

router = APIRouter(prefix="/plugins/usage", tags=["litellm-plugins: usage"])


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        bad_request(f"{name} must be an ISO 8601 time, e.g. 2026-11-23T00:00:00Z", name)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _bool(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    bad_request(f"{name} must be true or false", name)


async def usage_filter(
    caller: Caller = Depends(current_caller),
    account: str | None = Query(default=None),
    since: str | None = Query(default=None, alias="from"),
    until: str | None = Query(default=None, alias="to"),
    model: str | None = Query(default=None),
    power_level: str | None = Query(default=None),
    byok: str | None = Query(default=None),
    status: str | None = Query(default=None),
    provider: str | None = Query(default=None),
) -> store.UsageFilter:
    from litellm_plugins.credits.hook import engine

    eng = engine()
    own = caller.account(eng.order if eng else ("user", "team", "key"))
    if not caller.is_admin:
        if account is not None and account != own:
            forbidden("a non-admin key can only read its own usage", "account")
        account = own
        if account is None:
            bad_request("this key has no account", "account")
    if status is not None and status not in store.STATUS_RANK:
        bad_request(f"status must be one of {', '.join(store.STATUS_RANK)}", "status")
    flt = store.UsageFilter(account=account, since=_time(since, "from"), until=_time(until, "to"), model=model,
                            power_level=power_level, byok=_bool(byok, "byok"), status=status, provider=provider)
    if flt.since and flt.until and flt.since >= flt.until:
        bad_request("from must be before to", "from")
    return flt


def dec_str(value: Any) -> str:
    """Exact decimal string without exponent or trailing zeros (``0.00000012``, ``0``)."""
    return format(Decimal(value or 0).normalize(), "f")


def present(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["cost_usd"] = dec_str(row["cost_usd"])
    out["credits_charged"] = fmt(row["credits_charged"])
    out["created_at"] = row["created_at"].isoformat()
    return out


@router.get("")
async def query(flt: store.UsageFilter = Depends(usage_filter), limit: int = Query(default=100, ge=1, le=1000),
                offset: int = Query(default=0, ge=0, le=10_000_000)) -> dict[str, Any]:
    async with runtime.get().pool.acquire() as conn:
        rows = await store.query(conn, flt, limit, offset)
    return {"rows": [present(r) for r in rows], "limit": limit, "offset": offset}


@router.get("/export")
async def export(flt: store.UsageFilter = Depends(usage_filter),
                 format: str = Query(default="csv")) -> StreamingResponse:
    """Streamed from a server-side cursor: rows leave as they are read, never built in memory."""
    if format not in ("csv", "json"):
        bad_request("format must be csv or json", "format")
    pool = runtime.get().pool

    async def csv_rows() -> AsyncIterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(store.COLUMNS)
        async for row in store.stream(pool, flt):
            p = present(row)
            writer.writerow(["" if p[c] is None else p[c] for c in store.COLUMNS])
            if buf.tell() > 64 * 1024:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    async def json_rows() -> AsyncIterator[str]:
        yield "["
        first = True
        async for row in store.stream(pool, flt):
            yield ("" if first else ",") + json.dumps(present(row))
            first = False
        yield "]"

    if format == "csv":
        return StreamingResponse(csv_rows(), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="usage.csv"'})
    return StreamingResponse(json_rows(), media_type="application/json")


def _aggregate(r: dict[str, Any]) -> dict[str, Any]:
    requests = r["requests"]
    credits = r["credits_charged"]
    return {"requests": requests, "succeeded": r["succeeded"], "byok_requests": r["byok_requests"],
            "prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
            "cost_usd": dec_str(r["cost_usd"]), "credits_charged": fmt(credits),
            # exact: integer units divided by requests, rounded down to a unit
            "avg_credits_per_request": fmt(credits // requests) if requests else None,
            "p50_latency_ms": r["p50_latency_ms"]}


@router.get("/dashboard")
async def dashboard(flt: store.UsageFilter = Depends(usage_filter),
                    bucket: str = Query(default="day")) -> dict[str, Any]:
    """The console's usage screen in one round trip: totals, a time series, cost/requests by power
    level, provider and model group and, for an admin's all-accounts view, the top accounts."""
    if bucket not in store.BUCKETS:
        bad_request(f"bucket must be one of {', '.join(store.BUCKETS)}", "bucket")
    async with runtime.get().pool.acquire() as conn:
        data = await store.dashboard(conn, flt, bucket, tops=flt.account is None)
    out: dict[str, Any] = {"account": flt.account, "bucket": bucket,
                           "from": flt.since.isoformat() if flt.since else None,
                           "to": flt.until.isoformat() if flt.until else None,
                           "totals": _aggregate(data["totals"]),
                           "series": [{"t": r["t"].isoformat(), **_aggregate(r)} for r in data["series"]]}
    for name in ("by_level", "by_provider", "by_model", "top_accounts"):
        if name in data:
            out[name] = [{"key": r["key"], **_aggregate(r)} for r in data[name]]
    return out


@router.get("/summary")
async def summary(flt: store.UsageFilter = Depends(usage_filter),
                  by: str = Query(default="model")) -> dict[str, Any]:
    if by not in store.SUMMARY_KEYS:
        bad_request(f"by must be one of {', '.join(store.SUMMARY_KEYS)}", "by")
    async with runtime.get().pool.acquire() as conn:
        rows = await store.summary(conn, flt, by)
    out = []
    for r in rows:
        out.append({by: r["key"], "requests": r["requests"], "succeeded": r["succeeded"],
                    "prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
                    "cost_usd": dec_str(r["cost_usd"]),
                    "credits_charged": fmt(r["credits_charged"]), "p50_latency_ms": r["p50_latency_ms"]})
    return {"by": by, "groups": out}
