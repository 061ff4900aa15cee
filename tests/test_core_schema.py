"""schema.prisma and the SQL migrations can never drift: migrate an empty database, introspect it,
and compare with what schema.prisma declares (tables, columns, types, nullability, defaults, indexes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest

from litellm_plugins.core.db import SCHEMA
from litellm_plugins.core.migrator import MIGRATIONS_DIR, migrate
from tests.support.prisma_schema import Column, Index, Table, datasource_schemas, parse

ROOT = Path(__file__).resolve().parents[1]
# The top-level schema.prisma is the source; the package ships a byte-identical copy next to its
# migrations (a symlink would break `COPY litellm_plugins` in the Dockerfile and sdists).
SCHEMA_FILE = ROOT / "schema.prisma"
PACKAGED_SCHEMA_FILE = MIGRATIONS_DIR.parent / "schema.prisma"


def test_packaged_schema_is_the_top_level_one() -> None:
    assert PACKAGED_SCHEMA_FILE.read_bytes() == SCHEMA_FILE.read_bytes(), (
        "litellm_plugins/prisma/schema.prisma differs from schema.prisma (the source): "
        "edit schema.prisma, then `cp schema.prisma litellm_plugins/prisma/schema.prisma`")


def normalise_default(expr: str | None) -> str | None:
    if expr is None:
        return None
    if expr.startswith("nextval("):
        return "autoincrement"
    if expr.upper() in ("CURRENT_TIMESTAMP", "NOW()"):
        return "now"
    match = re.fullmatch(r"'(.*)'::[\w ]+", expr, re.S)
    return match.group(1) if match else expr


async def introspect(conn: asyncpg.Connection, schema: str) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for row in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema):
        tables[f"{schema}.{row['table_name']}"] = Table(schema, row["table_name"])
    for row in await conn.fetch("""
            SELECT table_name, column_name, udt_name, is_nullable, column_default, datetime_precision,
                   numeric_precision, numeric_scale, character_maximum_length
            FROM information_schema.columns WHERE table_schema = $1""", schema):
        udt = row["udt_name"]
        precision: tuple[int | None, ...] = ()
        if udt in ("timestamptz", "timestamp"):
            precision = (row["datetime_precision"],)
        elif udt == "numeric":
            precision = (row["numeric_precision"], row["numeric_scale"])
        elif udt == "varchar":
            precision = (row["character_maximum_length"],)
        tables[f"{schema}.{row['table_name']}"].columns[row["column_name"]] = Column(
            row["column_name"], udt, row["is_nullable"] == "YES", normalise_default(row["column_default"]),
            precision)
    for row in await conn.fetch("""
            SELECT t.relname AS table_name, i.relname AS index_name, ix.indisunique, ix.indisprimary,
                   array_agg(a.attname ORDER BY k.ord) AS columns, ix.indpred IS NOT NULL AS partial
            FROM pg_index ix
            JOIN pg_class t ON t.oid = ix.indrelid
            JOIN pg_class i ON i.oid = ix.indexrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
            WHERE n.nspname = $1
            GROUP BY t.relname, i.relname, ix.indisunique, ix.indisprimary, ix.indpred""", schema):
        assert not row["partial"], f"partial index {row['index_name']} cannot be declared in Prisma"
        tables[f"{schema}.{row['table_name']}"].indexes[row["index_name"]] = Index(
            row["index_name"], tuple(row["columns"]), row["indisunique"], row["indisprimary"])
    return tables


async def test_migrated_database_matches_schema_prisma(database: str) -> None:
    text = SCHEMA_FILE.read_text()
    assert datasource_schemas(text) == [SCHEMA], "every table must live in the litellm_plugins schema"
    declared = parse(text)
    assert declared, "schema.prisma declares no model"
    assert all(t.schema == SCHEMA for t in declared.values()), "a model is outside litellm_plugins"

    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)
        actual = await introspect(conn, SCHEMA)
        public = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema='public'")
    finally:
        await conn.close()

    assert public == [], "migrations must never create tables in public (LiteLLM drops unknown ones)"
    assert sorted(actual) == sorted(declared)
    for key, table in declared.items():
        assert actual[key].columns == table.columns, f"columns of {key} differ"
        assert actual[key].indexes == table.indexes, f"indexes of {key} differ"


def test_schema_parser_reads_types_defaults_and_indexes() -> None:
    """The comparison is only as good as the parser: check it on a schema with every construct."""
    tables = parse('''
model Thing {
  id        BigInt   @id @default(autoincrement())
  owner     String   @map("owner_id")
  amount    Decimal  @db.Decimal(20, 6)
  note      String?
  flag      Boolean  @default(false)
  at        DateTime @default(now()) @db.Timestamptz(6)
  code      String   @unique
  counts    Int[]
  @@unique([owner, code])
  @@index([at], map: "thing_at_custom")
  @@map("things")
  @@schema("litellm_plugins")
}''')
    table = tables["litellm_plugins.things"]
    assert table.columns["id"] == Column("id", "int8", False, "autoincrement")
    assert table.columns["owner_id"].udt == "text"
    assert table.columns["amount"].precision == (20, 6)
    assert table.columns["note"].nullable is True
    assert table.columns["flag"].default == "false"
    assert table.columns["at"] == Column("at", "timestamptz", False, "now", (6,))
    assert table.columns["counts"] == Column("counts", "_int4", False, None)
    assert set(table.indexes) == {"things_pkey", "things_code_key", "things_owner_id_code_key", "thing_at_custom"}
    assert table.indexes["things_owner_id_code_key"] == Index("things_owner_id_code_key", ("owner_id", "code"), True)
    with pytest.raises(ValueError):
        parse('model X {\n  a Foo\n  @@schema("litellm_plugins")\n}')


def test_prisma_validate_accepts_schema(tmp_path: Path) -> None:
    prisma = ROOT / "node_modules" / ".bin" / "prisma"
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed on this machine: prisma validate cannot run")
    assert prisma.exists(), "npm is present but the pinned prisma CLI is not installed (scripts/dev-env.sh does it)"
    # prisma validate only needs its bundled WebAssembly; engines just have to "exist" (no download here).
    engine = tmp_path / "no-engine"
    engine.write_text("")
    env = {**os.environ, "PRISMA_QUERY_ENGINE_LIBRARY": str(engine), "PRISMA_SCHEMA_ENGINE_BINARY": str(engine),
           "PRISMA_HIDE_UPDATE_MESSAGE": "1", "CHECKPOINT_DISABLE": "1",
           "LITELLM_PLUGINS_DATABASE_URL": "postgresql://validate@127.0.0.1/validate"}
    result = subprocess.run([str(prisma), "validate", "--schema", str(SCHEMA_FILE)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout
