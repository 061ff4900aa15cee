"""``litellm-plugins``: operator commands (migrate, credits, usage, byok, health, billing).

Each capability adds its own sub-commands from ``litellm_plugins/<capability>/cli.py``
(``register(subparsers)``), so the money commands live next to the money code.
"""

from __future__ import annotations

import os

# Importing litellm fetches its model price map from the internet unless told not to; an operator
# command must not stall (or fail) on that. Set before any litellm import below.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse  # noqa: E402
import asyncio
import importlib  # noqa: E402
import sys  # noqa: E402
from collections.abc import Awaitable, Callable
from typing import Any

from litellm_plugins.core.db import DatabaseUnavailable, connect
from litellm_plugins.core.migrator import MigrationError, migrate
from litellm_plugins.core.settings import PluginSettings, SettingsError, load_database_url, load_settings

CAPABILITY_CLIS = ("credits", "usage", "byok", "health", "billing")


class CliError(Exception):
    """A failure to report as one line on stderr with exit status 1."""


def settings_from(args: argparse.Namespace) -> tuple[PluginSettings, dict[str, Any]]:
    return load_settings(args.config)


async def _migrate(args: argparse.Namespace) -> int:
    conn = await connect(load_database_url(args.config))
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else
                                                   " (database already current)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="litellm-plugins", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("CONFIG_FILE_PATH", "proxy_config.yaml"),
                        help="proxy config with the litellm_plugins: section (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("migrate", help="apply database migrations (idempotent)")
    p.set_defaults(run=_migrate)
    for name in CAPABILITY_CLIS:
        try:
            module = importlib.import_module(f"litellm_plugins.{name}.cli")
        except ModuleNotFoundError as exc:
            if exc.name != f"litellm_plugins.{name}.cli" and exc.name != f"litellm_plugins.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], Awaitable[int]] = args.run
    try:
        return asyncio.run(run(args))
    except (SettingsError, DatabaseUnavailable, MigrationError, CliError) as exc:
        print(f"litellm-plugins: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
