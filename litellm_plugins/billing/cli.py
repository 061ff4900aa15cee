"""``litellm-plugins billing status | dead-letters | replay``: the export's state from any machine
that can reach Postgres (the same numbers as ``GET /plugins/billing/...``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from litellm_plugins.billing import service
from litellm_plugins.cli import CliError, settings_from
from litellm_plugins.core.db import create_pool
from litellm_plugins.core.runtime import Runtime


async def _runtime(args: argparse.Namespace) -> Runtime:
    settings, config = settings_from(args)
    pool = await create_pool(settings.database_url, 1, 2)
    return Runtime(settings=settings, config=config, pool=pool, redis=None)  # type: ignore[arg-type]


async def _with_runtime(args: argparse.Namespace, action: Any) -> int:
    rt = await _runtime(args)
    try:
        if getattr(args, "exporter", None) and (problem := service.unknown_exporter(rt, args.exporter)):
            raise CliError(problem)
        print(json.dumps(await action(rt), indent=2, default=str))
    finally:
        await rt.pool.close()
    return 0


async def _status(args: argparse.Namespace) -> int:
    return await _with_runtime(args, lambda rt: service.status(rt))


async def _dead_letters(args: argparse.Namespace) -> int:

    async def action(rt: Runtime) -> Any:
        return await service.dead_letters(rt, args.exporter, args.status, args.limit, None)
    return await _with_runtime(args, action)


async def _replay(args: argparse.Namespace) -> int:
    if not args.ids and not args.exporter:
        raise CliError("name dead-letter ids or --exporter")

    async def action(rt: Runtime) -> Any:
        return {"queued": await service.request_replay(rt, args.ids or None, args.exporter)}
    return await _with_runtime(args, action)


def register(subparsers: argparse._SubParsersAction) -> None:
    billing = subparsers.add_parser("billing", help="billing export: status, dead letters, replay")
    sub = billing.add_subparsers(dest="billing_command", required=True)
    p = sub.add_parser("status", help="backlog, lag, exported and dead letters per exporter")
    p.set_defaults(run=_status)
    p = sub.add_parser("dead-letters", help="list dead letters, newest first")
    p.add_argument("--exporter")
    p.add_argument("--status", choices=("dead", "replay", "replayed"))
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=_dead_letters)
    p = sub.add_parser("replay", help="queue dead letters for sending again")
    p.add_argument("ids", nargs="*", type=int)
    p.add_argument("--exporter", help="every dead letter of this exporter")
    p.set_defaults(run=_replay)
