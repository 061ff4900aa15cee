"""The migrator: applies the shipped SQL once, records it, is safe under concurrent starts, and refuses
a database whose history differs from the files."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from litellm_plugins.core.migrator import (
    RECORD_TABLE, Migration, MigrationError, load_migrations, migrate, status)

ROOT = Path(__file__).resolve().parents[1]


async def test_migrate_empty_database_then_noop(database: str) -> None:
    shipped = [m.name for m in load_migrations()]
    conn = await asyncpg.connect(database)
    try:
        assert (await status(conn)).pending == shipped
        assert await migrate(conn) == shipped
        assert await migrate(conn) == []
        state = await status(conn)
        assert state.current and state.applied == shipped
        rows = await conn.fetch(f"SELECT name, checksum FROM {RECORD_TABLE} ORDER BY name")
        assert [(r["name"], r["checksum"]) for r in rows] == [(m.name, m.checksum) for m in load_migrations()]
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(database: str) -> None:
    """Several workers starting at once: the advisory lock serialises them, nothing runs twice."""
    conns = [await asyncpg.connect(database) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = [name for result in results for name in result]
        assert sorted(applied) == sorted(m.name for m in load_migrations())
        assert await conns[0].fetchval(f"SELECT count(*) FROM {RECORD_TABLE}") == len(load_migrations())
    finally:
        for c in conns:
            await c.close()


async def test_refuses_changed_unknown_or_out_of_order_history(database: str) -> None:
    base = [Migration("20200101000000_a", "CREATE SCHEMA IF NOT EXISTS litellm_plugins;"
                      "CREATE TABLE litellm_plugins._plugin_migrations (name TEXT PRIMARY KEY,"
                      " checksum TEXT NOT NULL, applied_at TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP);"),
            Migration("20200102000000_b", "CREATE TABLE litellm_plugins.b (id INT);")]
    conn = await asyncpg.connect(database)
    try:
        assert await migrate(conn, base) == ["20200101000000_a", "20200102000000_b"]
        edited = [base[0], Migration(base[1].name, base[1].sql + " -- edited")]
        with pytest.raises(MigrationError, match="changed after they were applied: 20200102000000_b"):
            await migrate(conn, edited)
        with pytest.raises(MigrationError, match="does not ship: 20200102000000_b"):
            await migrate(conn, base[:1])
        late = [*base, Migration("20200101500000_c", "SELECT 1;")]
        with pytest.raises(MigrationError, match="sorts before already-applied"):
            await migrate(conn, late)
        # a refused run changed nothing
        assert await conn.fetchval(f"SELECT count(*) FROM {RECORD_TABLE}") == 2
    finally:
        await conn.close()


async def test_failed_migration_is_rolled_back_and_not_recorded(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)
        bad = [*load_migrations(), Migration("29991231000000_bad",
                                              "CREATE TABLE litellm_plugins.half (id INT); SELECT 1/0;")]
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, bad)
        assert await conn.fetchval("SELECT to_regclass('litellm_plugins.half')") is None
        assert (await status(conn, bad)).pending == ["29991231000000_bad"]
    finally:
        await conn.close()


def _cli(*args: str, env_dsn: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "LITELLM_PLUGINS_DATABASE_URL": env_dsn, "LITELLM_PLUGINS_REDIS_URL": "redis://127.0.0.1:6379/0",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HOME": "/tmp"}
    return subprocess.run([sys.executable, "-m", "litellm_plugins.cli", "--config",
                           str(ROOT / "proxy_config.yaml"), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_cli_migrate_twice(database: str) -> None:
    first = _cli("migrate", env_dsn=database)
    assert first.returncode == 0, first.stderr
    assert f"applied {len(load_migrations())} migration(s)" in first.stdout
    second = _cli("migrate", env_dsn=database)
    assert second.returncode == 0, second.stderr
    assert "applied 0 migration(s) (database already current)" in second.stdout


def test_cli_migrate_needs_only_the_database_url(tmp_path: Path) -> None:
    """_cli() sets no BYOK key and no valid redis: migrate must not need runtime secrets."""
    config = tmp_path / "c.yaml"
    config.write_text("litellm_plugins:\n  redis_url: os.environ/NOT_SET_AT_ALL\n")
    env = {"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HOME": "/tmp"}
    result = subprocess.run([sys.executable, "-m", "litellm_plugins.cli", "--config", str(config), "migrate"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == "litellm-plugins: litellm_plugins.database_url: required setting is missing"


def test_cli_migrate_unreachable_database_is_one_clear_line() -> None:
    result = _cli("migrate", env_dsn="postgresql://someone:hunter2secret@127.0.0.1:1/nowhere")
    assert result.returncode == 1
    assert result.stderr.startswith("litellm-plugins: cannot connect to Postgres at postgresql://someone:***@127.0.0.1:1/nowhere")
    assert "hunter2secret" not in result.stderr and "Traceback" not in result.stderr
