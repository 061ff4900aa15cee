"""Applies ``prisma/migrations/<timestamp>_<name>/migration.sql`` ourselves.

Prisma's engines cannot be downloaded on every machine, so the package applies Prisma Migrate's own
files: in name order, each in one transaction with its record, under a Postgres advisory lock so
several workers starting at once apply each file exactly once. A database whose recorded history
differs from the files (edited, missing or unknown migrations) is refused rather than "fixed".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from litellm_plugins.core.db import SCHEMA

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "prisma" / "migrations"
RECORD_TABLE = f"{SCHEMA}._plugin_migrations"
# Any fixed 64-bit number; the same on every worker and instance.
ADVISORY_LOCK_ID = 0x6C6974656C6D70  # "litellmp"


class MigrationError(Exception):
    """The database's recorded migrations do not match the files shipped with this package."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    applied: list[str]
    pending: list[str]

    @property
    def current(self) -> bool:
        return not self.pending


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [Migration(path.parent.name, path.read_text(encoding="utf-8"))
            for path in sorted(directory.glob("*/migration.sql"))]


async def _recorded(conn: asyncpg.Connection) -> dict[str, str]:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", RECORD_TABLE)
    if not exists:
        return {}
    rows = await conn.fetch(f"SELECT name, checksum FROM {RECORD_TABLE} ORDER BY name")
    return {row["name"]: row["checksum"] for row in rows}


def _compare(recorded: dict[str, str], migrations: list[Migration]) -> list[Migration]:
    """Return the migrations still to apply, or refuse when history and files disagree."""
    by_name = {m.name: m for m in migrations}
    unknown = [name for name in recorded if name not in by_name]
    if unknown:
        raise MigrationError(
            f"database has migrations this package does not ship: {', '.join(unknown)} "
            "(is an older litellm-plugins running against a newer database?)")
    changed = [name for name, checksum in recorded.items() if by_name[name].checksum != checksum]
    if changed:
        raise MigrationError(f"migration files changed after they were applied: {', '.join(changed)}")
    pending = [m for m in migrations if m.name not in recorded]
    if recorded and pending and pending[0].name < max(recorded):
        raise MigrationError(
            f"migration {pending[0].name} sorts before already-applied {max(recorded)}; "
            "new migrations must come last")
    return pending


async def status(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> MigrationStatus:
    migrations = load_migrations() if migrations is None else migrations
    recorded = await _recorded(conn)
    pending = _compare(recorded, migrations)
    return MigrationStatus(applied=sorted(recorded), pending=[m.name for m in pending])


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when already current)."""
    migrations = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_ID)
    try:
        pending = _compare(await _recorded(conn), migrations)
        for migration in pending:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {RECORD_TABLE} (name, checksum) VALUES ($1, $2)",
                    migration.name, migration.checksum)
        return [m.name for m in pending]
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_ID)
