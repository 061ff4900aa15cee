"""A reader for the subset of Prisma schema language this project uses, and what it implies in Postgres.

Used by tests/test_core_schema.py to compare ``schema.prisma`` with a database migrated from the SQL
files, so the two cannot drift. Deliberately strict: an attribute it does not understand is an
error, not silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SCALARS = {"String", "Int", "BigInt", "Boolean", "DateTime", "Json", "Bytes", "Decimal", "Float"}


@dataclass(frozen=True)
class Column:
    name: str
    udt: str                   # information_schema.columns.udt_name
    nullable: bool
    default: str | None        # normalised: None | "now" | "autoincrement" | literal text
    precision: tuple[int | None, ...] = ()  # (datetime precision) or (numeric precision, scale) or (char length)


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool
    primary: bool = False


@dataclass
class Table:
    schema: str
    name: str
    columns: dict[str, Column] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)


def _args(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _bracket_list(text: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", text)
    if not match:
        raise ValueError(f"expected [fields] in {text!r}")
    return [re.sub(r"\(.*\)", "", f).strip() for f in _args(match.group(1))]


def _map_arg(text: str) -> str | None:
    match = re.search(r'map:\s*"([^"]+)"', text)
    return match.group(1) if match else None


def _attr(attrs: str, name: str) -> str | None:
    """Argument text of ``@name(...)`` (balanced parentheses), '' for ``@name`` alone, None if absent."""
    match = re.search(rf"@{re.escape(name)}(?![\w.])", attrs)
    if not match:
        return None
    rest = attrs[match.end():]
    if not rest.startswith("("):
        return ""
    depth = 0
    for i, ch in enumerate(rest):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return rest[1:i]
    raise ValueError(f"unbalanced parentheses in {attrs!r}")


def _column(field_name: str, type_text: str, attrs: str) -> Column:
    optional = type_text.endswith("?")
    base = type_text.rstrip("?")
    if base.endswith("[]"):  # a scalar list is a Postgres array, never NULL in Prisma
        element = _column(field_name, base[:-2], attrs)
        return Column(element.name, "_" + element.udt, False, element.default, element.precision)
    if base not in SCALARS:
        raise ValueError(f"field {field_name}: unsupported type {type_text} (relations/enums are not used here)")
    db_name = (_attr(attrs, "map") or "").strip('"') or field_name
    native = re.search(r"@db\.(\w+)(?:\(([^)]*)\))?", attrs)
    precision: tuple[int | None, ...] = ()
    if base == "String":
        udt = "text"
        if native and native.group(1) == "VarChar":
            udt, precision = "varchar", (int(native.group(2)),)
    elif base == "DateTime":
        if native and native.group(1) == "Timestamptz":
            udt, precision = "timestamptz", (int(native.group(2) or 6),)
        else:
            udt, precision = "timestamp", (3,)
    elif base == "Decimal":
        p, s = (int(x) for x in _args(native.group(2))) if native and native.group(2) else (65, 30)
        udt, precision = "numeric", (p, s)
    else:
        udt = {"Int": "int4", "BigInt": "int8", "Boolean": "bool", "Json": "jsonb", "Bytes": "bytea",
               "Float": "float8"}[base]
    default_arg = _attr(attrs, "default")
    default: str | None
    if default_arg is None or default_arg in ("uuid()", "cuid()"):
        default = None
    elif default_arg == "now()":
        default = "now"
    elif default_arg == "autoincrement()":
        default = "autoincrement"
    else:
        default = default_arg.strip('"')
    nullable = optional and _attr(attrs, "id") is None
    return Column(db_name, udt, nullable, default, precision)


def parse(text: str) -> dict[str, Table]:
    """Tables keyed by ``schema.table``."""
    text = re.sub(r"//.*", "", text)
    tables: dict[str, Table] = {}
    for match in re.finditer(r"model\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
        model, body = match.group(1), match.group(2)
        fields: dict[str, Column] = {}
        block_attrs: list[str] = []
        single_unique: list[str] = []
        single_id: list[str] = []
        for raw in body.splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("@@"):
                block_attrs.append(line)
                continue
            name, type_text, *rest = line.split(None, 2)
            attrs = rest[0] if rest else ""
            column = _column(name, type_text, attrs)
            fields[name] = column
            if _attr(attrs, "unique") is not None:
                single_unique.append(name)
            if _attr(attrs, "id") is not None:
                single_id.append(name)
        table_name, schema = model, "public"
        for attr in block_attrs:
            if attr.startswith("@@map("):
                table_name = re.search(r'"([^"]+)"', attr).group(1)
            elif attr.startswith("@@schema("):
                schema = re.search(r'"([^"]+)"', attr).group(1)
        table = Table(schema, table_name, {c.name: c for c in fields.values()})

        def db(names: list[str]) -> tuple[str, ...]:
            return tuple(fields[n].name for n in names)

        if single_id:
            table.indexes[f"{table_name}_pkey"] = Index(f"{table_name}_pkey", db(single_id), True, True)
        for name in single_unique:
            idx = f"{table_name}_{fields[name].name}_key"
            table.indexes[idx] = Index(idx, db([name]), True)
        for attr in block_attrs:
            kind = attr[2:attr.index("(")]
            if kind in ("map", "schema"):
                continue
            if kind not in ("id", "unique", "index"):
                raise ValueError(f"{model}: unsupported block attribute {attr}")
            cols = db(_bracket_list(attr))
            if kind == "id":
                idx = _map_arg(attr) or f"{table_name}_pkey"
                table.indexes[idx] = Index(idx, cols, True, True)
            else:
                suffix = "key" if kind == "unique" else "idx"
                idx = _map_arg(attr) or f"{table_name}_{'_'.join(cols)}_{suffix}"
                table.indexes[idx] = Index(idx, cols, kind == "unique")
        tables[f"{schema}.{table_name}"] = table
    return tables


def datasource_schemas(text: str) -> list[str]:
    match = re.search(r"datasource\s+\w+\s*\{.*?schemas\s*=\s*\[([^\]]*)\]", text, re.S)
    return [s.strip().strip('"') for s in match.group(1).split(",")] if match else ["public"]
