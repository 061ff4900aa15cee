"""``litellm-plugins usage export``: stream the usage log as CSV or JSON lines to stdout or a file."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from litellm_plugins.cli import CliError, settings_from
from litellm_plugins.core.db import create_pool
from litellm_plugins.usage import store


async def _export(args: argparse.Namespace) -> int:
    # usage.api pulls in FastAPI and LiteLLM's auth: only this command needs its helpers
    from litellm_plugins.usage.api import _time, present
    settings, _ = settings_from(args)
    try:
        flt = store.UsageFilter(account=args.account, since=_time(args.since, "from"), until=_time(args.until, "to"),
                                model=args.model, power_level=args.power_level,
                                byok=None if args.byok is None else args.byok == "true", status=args.status)
    except Exception as exc:  # noqa: BLE001 - ProxyException from the shared parser
        raise CliError(getattr(exc, "message", str(exc))) from None
    pool = await create_pool(settings.database_url, 1, 2)
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    count = 0
    try:
        writer = csv.writer(out) if args.format == "csv" else None
        if writer:
            writer.writerow(store.COLUMNS)
        async for row in store.stream(pool, flt):
            p = present(row)
            if writer:
                writer.writerow(["" if p[c] is None else p[c] for c in store.COLUMNS])
            else:
                out.write(json.dumps(p) + "\n")
            count += 1
    finally:
        await pool.close()
        if out is not sys.stdout:
            out.close()
    print(f"exported {count} row(s)", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    usage = subparsers.add_parser("usage", help="usage log")
    sub = usage.add_subparsers(dest="usage_command", required=True)
    p = sub.add_parser("export", help="export usage rows (CSV or JSON lines), streamed")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("--output", help="file to write (default: stdout)")
    p.add_argument("--account")
    p.add_argument("--from", dest="since")
    p.add_argument("--to", dest="until")
    p.add_argument("--model")
    p.add_argument("--power-level")
    p.add_argument("--byok", choices=("true", "false"))
    p.add_argument("--status", choices=tuple(store.STATUS_RANK))
    p.set_defaults(run=_export)
