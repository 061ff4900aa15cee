"""``litellm-plugins health show``: the same view as ``GET /plugins/health`` (admin), from a shell.

Deployment ids are computed by building a LiteLLM ``Router`` from the config's ``model_list`` —
LiteLLM's own id function, so they match the running proxy's.
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

from litellm_plugins.cli import settings_from
from litellm_plugins.core.db import create_pool
from litellm_plugins.core.redis import check, create_client
from litellm_plugins.core.runtime import Runtime


def _router_deployments(config: dict[str, Any]):  # noqa: ANN202 - list[Deployment]
    from litellm import Router

    from litellm_plugins.health.deployments import from_router

    router = Router(model_list=copy.deepcopy(config.get("model_list") or []))
    return from_router(router, config)


def _table(body: dict[str, Any]) -> str:
    lines = [f"{'provider':<14} {'model group':<28} {'deployment':<18} {'status':<12} "
             f"{'err':>6} {'p50ms':>7} {'p95ms':>7} {'up24h%':>8} {'up7d%':>8} {'up30d%':>8}  reason / last probe"]

    def num(value: Any, fmt: str = "{:.1f}") -> str:
        return "-" if value is None else fmt.format(value)

    for provider in body["providers"]:
        for d in provider["deployments"]:
            probe = d.get("last_probe")
            note = d.get("reason") or (f"probe {'ok' if probe['ok'] else probe['error']} at {probe['at']}"
                                       if probe else d.get("not_probed_reason") or "")
            lines.append(
                f"{provider['provider']:<14} {d['model_group'][:28]:<28} {d['model_id'][:18]:<18} "
                f"{d['status']:<12} {num(d['error_rate'], '{:.2f}'):>6} {num(d['latency_p50_ms']):>7} "
                f"{num(d['latency_p95_ms']):>7} {num(d['uptime']['24h'], '{:.2f}'):>8} "
                f"{num(d['uptime']['7d'], '{:.2f}'):>8} {num(d['uptime']['30d'], '{:.2f}'):>8}  {note}")
    prober = body.get("prober") or {}
    lines.append(f"prober: {prober.get('holder') or 'none'} (every {prober.get('interval_s')}s)")
    return "\n".join(lines)


async def _show(args: argparse.Namespace) -> int:
    from litellm_plugins.health import service as health_service
    from litellm_plugins.health.api import snapshot

    settings, config = settings_from(args)
    pool = await create_pool(settings.database_url, 1, 2)
    redis = create_client(settings.redis_url)
    try:
        await check(redis, settings.redis_url)
        rt = Runtime(settings=settings, config=config, pool=pool, redis=redis)
        deployments = _router_deployments(config)
        health_service._service = health_service.HealthService(rt, source=lambda: deployments)
        body = await snapshot(rt, admin=True, model_group=args.model_group)
    finally:
        await pool.close()
        await redis.aclose()
    print(json.dumps(body, indent=2) if args.json else _table(body))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    health = subparsers.add_parser("health", help="provider/deployment health")
    sub = health.add_subparsers(dest="health_command", required=True)
    show = sub.add_parser("show", help="status, error rate, latency p50/p95, uptime 24h/7d/30d, last probe")
    show.add_argument("--json", action="store_true", help="print the JSON document instead of a table")
    show.add_argument("--model-group", default=None, help="only this model group")
    show.set_defaults(run=_show)
