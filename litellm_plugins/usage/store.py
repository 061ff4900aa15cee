"""Queries of the ``usage_log`` table: batched upsert, filtered query, streamed export, summaries, and the
console dashboard read from its rollups (``usage_rollup_*``, kept by triggers on ``usage_log``)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg

COLUMNS = ("id", "call_id", "account", "user_id", "team_id", "key_hash", "requested_model", "power_level",
           "model_group", "deployment", "provider", "first_choice_group", "byok", "prompt_tokens", "completion_tokens", "cost_usd",
           "credits_charged", "latency_ms", "stream", "status", "error_type", "tier", "billing_customer",
           "created_at")
# Which outcome wins when one request reports several (a failed attempt, then a successful retry).
STATUS_RANK = {"success": 3, "failure": 2, "rejected": 1}

_TYPES = {"byok": "bool", "stream": "bool", "prompt_tokens": "int4", "completion_tokens": "int4",
          "cost_usd": "numeric", "credits_charged": "int8", "latency_ms": "int4", "created_at": "float8"}


def insert_sql(columns: tuple[str, ...]) -> str:
    """One statement per batch (unnest of column arrays): a 500-row batch is one round trip."""
    return (
        f"INSERT INTO usage_log ({', '.join(columns)}) SELECT "
        + ", ".join("to_timestamp(created_at)" if c == "created_at" else c for c in columns)
        + " FROM unnest("
        + ", ".join(f"${i + 1}::{_TYPES.get(c, 'text')}[]" for i, c in enumerate(columns))
        + f") AS t({', '.join(columns)}) "
        "ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:] if c != "created_at")
        + " WHERE EXCLUDED.status = 'success' AND usage_log.status <> 'success'"
    )


_INSERT = insert_sql(COLUMNS)


def dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        prev = best.get(row["id"])
        if prev is None or STATUS_RANK.get(row["status"], 0) > STATUS_RANK.get(prev["status"], 0):
            best[row["id"]] = row
    return list(best.values())


async def insert_rows(conn: asyncpg.Connection, rows: list[dict[str, Any]],
                      names: tuple[str, ...] = COLUMNS) -> None:
    """``names``: the columns to write (tests of older schemas pass fewer)."""
    if not rows:
        return
    unique = dedupe(rows)
    columns: list[list[Any]] = []
    for c in names:
        if c == "cost_usd":
            columns.append([Decimal(str(r.get(c) or 0)) for r in unique])
        elif c == "created_at":
            columns.append([float(r.get("ts") or 0) for r in unique])
        else:
            columns.append([r.get(c) for r in unique])
    await conn.execute(_INSERT if names == COLUMNS else insert_sql(names), *columns)


@dataclass(frozen=True)
class UsageFilter:
    account: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    power_level: str | None = None
    byok: bool | None = None
    status: str | None = None
    provider: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def add(sql: str, value: Any) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        if self.account is not None:
            add("account = ?", self.account)
        if self.since is not None:
            add("created_at >= ?", self.since)
        if self.until is not None:
            add("created_at < ?", self.until)
        if self.model is not None:
            add("(model_group = ? OR requested_model = ?)", self.model)
        if self.power_level is not None:
            add("power_level = ?", self.power_level)
        if self.byok is not None:
            add("byok = ?", self.byok)
        if self.status is not None:
            add("status = ?", self.status)
        if self.provider is not None:
            add("provider = ?", self.provider)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


async def query(conn: asyncpg.Connection, flt: UsageFilter, limit: int, offset: int) -> list[dict[str, Any]]:
    where, args = flt.where()
    rows = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM usage_log{where} ORDER BY created_at DESC, id "
        f"LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}", *args, limit, offset)
    return [dict(r) for r in rows]


async def stream(pool: asyncpg.Pool, flt: UsageFilter, batch: int = 500) -> AsyncIterator[dict[str, Any]]:
    """Rows through a server-side cursor: an export of millions of rows never sits in memory."""
    where, args = flt.where()
    async with pool.acquire() as conn:
        async with conn.transaction(readonly=True):
            cursor = conn.cursor(f"SELECT {', '.join(COLUMNS)} FROM usage_log{where} "
                                 "ORDER BY created_at, id", *args, prefetch=batch)
            async for row in cursor:
                yield dict(row)


SUMMARY_KEYS = {"provider": "provider", "model": "model_group", "power_level": "power_level",
                "account": "account", "status": "status"}


async def summary(conn: asyncpg.Connection, flt: UsageFilter, by: str) -> list[dict[str, Any]]:
    column = SUMMARY_KEYS[by]
    where, args = flt.where()
    rows = await conn.fetch(
        f"SELECT {column} AS key, count(*) AS requests, "
        "count(*) FILTER (WHERE status = 'success') AS succeeded, "
        "COALESCE(sum(prompt_tokens), 0)::bigint AS prompt_tokens, "
        "COALESCE(sum(completion_tokens), 0)::bigint AS completion_tokens, "
        "COALESCE(sum(cost_usd), 0) AS cost_usd, COALESCE(sum(credits_charged), 0)::bigint AS credits_charged, "
        f"percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_latency_ms "
        f"FROM usage_log{where} GROUP BY {column} ORDER BY requests DESC, key", *args)
    return [dict(r) for r in rows]


BUCKETS = ("hour", "day", "week", "month")
TOP_N = 10

# Latency bucket thresholds of the rollups' histograms: the same list as the SQL function
# usage_latency_bucket() of migration 20261201002000 (width_bucket: bucket i holds
# LATENCY_BOUNDS[i-1] <= ms < LATENCY_BOUNDS[i]; bucket 0 is < 5 ms, bucket 48 is >= 179366 ms).
LATENCY_BOUNDS = (5, 6, 8, 10, 12, 15, 19, 24, 30, 37, 47, 58, 73, 91, 114, 142, 178, 222, 278, 347, 434, 542,
                  678, 847, 1059, 1323, 1654, 2068, 2585, 3231, 4039, 5049, 6311, 7889, 9861, 12326, 15407,
                  19259, 24074, 30093, 37616, 47020, 58775, 73468, 91835, 114794, 143493, 179366)
N_LATENCY = len(LATENCY_BOUNDS) + 1
# A missing text dimension is '' in the rollups: a filter on '' is answered from the raw rows.
ROLLUP_DIMS = ("requested_model", "power_level", "model_group", "provider", "byok", "status")
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)


def latency_bucket_value(b: int) -> int:
    """The latency a histogram bucket stands for: its geometric middle (within ~12% of any value in it)."""
    if b == 0:
        return LATENCY_BOUNDS[0] // 2
    if b >= len(LATENCY_BOUNDS):
        return LATENCY_BOUNDS[-1]
    return round(math.sqrt(LATENCY_BOUNDS[b - 1] * LATENCY_BOUNDS[b]))


def hist_p50(counts: list[int]) -> int | None:
    """``percentile_disc(0.5)`` read from a histogram: the bucket holding the ceil(n/2)-th latency."""
    n = sum(counts)
    if n <= 0:
        return None
    rank = (n + 1) // 2
    seen = 0
    for b, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return latency_bucket_value(b)
    return latency_bucket_value(len(counts) - 1)


def _floor(t: datetime, step: timedelta) -> datetime:
    t = t.astimezone(timezone.utc)
    return t.replace(minute=0, second=0, microsecond=0, **({"hour": 0} if step == _DAY else {}))


def _ceil(t: datetime, step: timedelta) -> datetime:
    f = _floor(t, step)
    return f if f == t else f + step


_MEASURES = ("requests, succeeded, byok_requests, prompt_tokens, completion_tokens, cost_usd, credits_charged, "
             "latency_hist")
_RAW_MEASURES = ("1::bigint AS requests, (status = 'success')::int::bigint AS succeeded, "
                 "byok::int::bigint AS byok_requests, prompt_tokens::bigint, completion_tokens::bigint, "
                 "cost_usd, credits_charged, "
                 "CASE WHEN latency_ms IS NULL THEN array_fill(0, ARRAY[%d]) ELSE array_fill(0, "
                 "ARRAY[usage_latency_bucket(latency_ms)]) || 1 || array_fill(0, "
                 "ARRAY[%d - usage_latency_bucket(latency_ms)]) END AS latency_hist"
                 % (N_LATENCY, N_LATENCY - 1))
_DIM_SELECT = ("NULLIF(requested_model, '') AS requested_model, NULLIF(power_level, '') AS power_level, "
               "NULLIF(model_group, '') AS model_group, NULLIF(provider, '') AS provider, byok, status")
_RAW_DIMS = "requested_model, power_level, model_group, provider, byok, status"


class _Sources:
    """The filtered usage of a time range as a UNION ALL of rollup rows and raw rows, all of one shape
    (t, [account,] dims, measures, latency_hist): rollup rows for every whole hour (or day) the range
    covers, raw ``usage_log`` rows only for the partial hours at its two ends. Exact for every sum,
    because the rollups are kept in the writers' own transactions."""

    def __init__(self, flt: UsageFilter, accounts: list[str | None] | None = None) -> None:
        self.flt = flt
        self.accounts = accounts  # only these accounts (None: an account the rollups store as '')
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def _dim_where(self, raw: bool) -> list[str]:
        f = self.flt
        out = []
        if f.account is not None:
            out.append(f"account = {self.arg(f.account)}")
        if self.accounts is not None:
            named = self.arg([a for a in self.accounts if a is not None])
            if None in self.accounts:
                out.append(f"(account = ANY({named}::text[]) OR account IS NULL)" if raw
                           else f"account = ANY(array_append({named}::text[], ''))")
            else:
                out.append(f"account = ANY({named}::text[])")
        if f.model is not None:
            p = self.arg(f.model)
            out.append(f"(model_group = {p} OR requested_model = {p})")
        for name in ("power_level", "byok", "status", "provider"):
            value = getattr(f, name)
            if value is not None:
                out.append(f"{name} = {self.arg(value)}")
        return out

    def _piece(self, table: str, tcol: str, lo: datetime | None, hi: datetime | None, cols: str,
               raw: bool) -> str:
        where = self._dim_where(raw)
        if lo is not None:
            where.append(f"{tcol} >= {self.arg(lo)}")
        if hi is not None:
            where.append(f"{tcol} < {self.arg(hi)}")
        w = (" WHERE " + " AND ".join(where)) if where else ""
        t = f"date_trunc('hour', {tcol}, 'UTC')" if raw else tcol
        return f"SELECT {t} AS t, {cols}, {_RAW_MEASURES if raw else _MEASURES} FROM {table}{w}"

    def sql(self, per_account: bool, dims: bool, daily: bool) -> str:
        """``per_account``: the account column is needed (or filtered on); ``dims``: the dashboard
        dimensions are; ``daily``: whole days may come from a day rollup (``usage_rollup_day``, all
        accounts with dims, or ``usage_rollup_account_day``, per account without dims)."""
        s, u = self.flt.since, self.flt.until
        hour_table = "usage_rollup_account_hour" if per_account else "usage_rollup_hour"
        day_table = {(False, True): "usage_rollup_day", (False, False): "usage_rollup_day",
                     (True, False): "usage_rollup_account_day"}.get((per_account, dims))
        daily = daily and day_table is not None
        roll_cols = ", ".join(([f"NULLIF(account, '') AS account"] if per_account else [])
                              + ([_DIM_SELECT] if dims else []))
        raw_cols = ", ".join((["account"] if per_account else []) + ([_RAW_DIMS] if dims else []))
        pieces: list[str] = []
        h0 = _ceil(s, _HOUR) if s is not None else None
        h1 = _floor(u, _HOUR) if u is not None else None
        if h0 is not None and h1 is not None and h0 > h1:  # inside one hour: raw rows only
            pieces.append(self._piece("usage_log", "created_at", s, u, raw_cols, True))
            return " UNION ALL ".join(pieces)
        if s is not None and s < h0:
            pieces.append(self._piece("usage_log", "created_at", s, h0, raw_cols, True))
        d0 = _ceil(s, _DAY) if s is not None else None
        d1 = _floor(u, _DAY) if u is not None else None
        if daily and not (d0 is not None and d1 is not None and d0 > d1):
            if h0 is not None and h0 < d0:
                pieces.append(self._piece(hour_table, "hour", h0, d0, roll_cols, False))
            pieces.append(self._piece(day_table, "day", d0, d1, roll_cols, False))
            if d1 is not None and d1 < h1:
                pieces.append(self._piece(hour_table, "hour", d1, h1, roll_cols, False))
        else:
            pieces.append(self._piece(hour_table, "hour", h0, h1, roll_cols, False))
        if u is not None and h1 < u:
            pieces.append(self._piece("usage_log", "created_at", h1, u, raw_cols, True))
        return " UNION ALL ".join(pieces)


def rollup_can_answer(flt: UsageFilter) -> bool:
    """Every filter the dashboard offers is a rollup dimension; only a filter on '' (the rollups' stand-in
    for NULL) is not."""
    return all(getattr(flt, n) != "" for n in ("account", "model", "power_level", "status", "provider"))


_ROLLUP_AGG = ("COALESCE(sum(requests), 0)::bigint AS requests, COALESCE(sum(succeeded), 0)::bigint AS succeeded, "
               "COALESCE(sum(byok_requests), 0)::bigint AS byok_requests, "
               "COALESCE(sum(credits_charged), 0)::bigint AS credits_charged, COALESCE(sum(cost_usd), 0) AS cost_usd, "
               "COALESCE(sum(prompt_tokens), 0)::bigint AS prompt_tokens, "
               "COALESCE(sum(completion_tokens), 0)::bigint AS completion_tokens, "
               + ", ".join(f"COALESCE(sum(latency_hist[{i + 1}]), 0)::bigint AS h{i}" for i in range(N_LATENCY)))


def _from_hist(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    counts = [out.pop(f"h{i}") for i in range(N_LATENCY)]
    out["p50_latency_ms"] = hist_p50(counts)
    return out


async def dashboard(conn: asyncpg.Connection, flt: UsageFilter, bucket: str, tops: bool) -> dict[str, Any]:
    """Everything the console's usage screen draws, in one read-only transaction: totals, a time
    series (``date_trunc(bucket)`` in UTC), per level / provider / model and, for an all-accounts
    view, the top accounts. Read from the hourly / daily rollups (migration 20261201002000) plus the
    raw rows of the partial hours at the range's ends; sums are exact, p50 latency comes from the
    rollups' histograms (within ~12%). A filter the rollups cannot express reads the raw rows."""
    if not rollup_can_answer(flt):
        return await dashboard_raw(conn, flt, bucket, tops)
    per_account = flt.account is not None
    out: dict[str, Any] = {"series": [], "by_level": [], "by_provider": [], "by_model": []}
    sets = {0b1111: "totals", 0b0111: "series", 0b1011: "by_level", 0b1101: "by_provider", 0b1110: "by_model"}
    async with conn.transaction(readonly=True):
        src = _Sources(flt)
        # whole days from the day rollup unless the series is in hours
        body = src.sql(per_account=per_account, dims=True, daily=bucket != "hour")
        # One pass over the rollup rows for all five aggregates (the histogram sums are the costly part),
        # each set ordered and cut in SQL as the raw query does (same collation, same ties).
        rows = await conn.fetch(
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY gid ORDER BY credits_charged DESC, "
            "requests DESC, power_level, provider, model_group, t) AS n FROM ("
            f"SELECT GROUPING(bt, power_level, provider, model_group) AS gid, bt AS t, power_level, provider, "
            f"model_group, {_ROLLUP_AGG} FROM (SELECT date_trunc('{bucket}', t, 'UTC') AS bt, * FROM ({body}) AS u) "
            "AS src GROUP BY GROUPING SETS ((), (bt), (power_level), (provider), (model_group))) AS g) AS o "
            "WHERE gid IN (15, 7) OR (n <= 50 AND requests > 0) ORDER BY gid, n", *src.args)
        for r in rows:
            name = sets[r["gid"]]
            item = _from_hist(r)
            key = {"by_level": "power_level", "by_provider": "provider", "by_model": "model_group"}.get(name)
            for c in ("gid", "n", "power_level", "provider", "model_group"):
                item.pop(c)
            if name == "totals":
                item.pop("t")
                out["totals"] = item
            elif name == "series":
                if item["requests"] > 0:
                    out["series"].append(item)
            else:
                item.pop("t")
                out[name].append({"key": r[key], **item})
        out["series"].sort(key=lambda i: i["t"])
        if tops:
            # Top accounts in two steps: rank on the two sums the order needs, then read every sum and
            # the latency histogram of the ten winners only (an index probe per winner).
            dim_filter = any(getattr(flt, n) is not None for n in ("model", "power_level", "byok", "status",
                                                                     "provider"))
            src = _Sources(flt)
            body = src.sql(per_account=True, dims=dim_filter, daily=not dim_filter)
            top = await conn.fetch(
                f"SELECT account AS key, COALESCE(sum(credits_charged), 0)::bigint AS credits_charged, "
                f"COALESCE(sum(requests), 0)::bigint AS requests FROM ({body}) AS src GROUP BY 1 "
                f"HAVING sum(requests) > 0 ORDER BY credits_charged DESC, requests DESC, 1 LIMIT {TOP_N}",
                *src.args)
            keys = [r["key"] for r in top]
            details: dict[Any, dict[str, Any]] = {}
            if keys:
                src = _Sources(flt, accounts=keys)
                body = src.sql(per_account=True, dims=dim_filter, daily=not dim_filter)
                for r in await conn.fetch(f"SELECT account AS key, {_ROLLUP_AGG} FROM ({body}) AS src GROUP BY 1",
                                          *src.args):
                    details[r["key"]] = _from_hist(r)
            out["top_accounts"] = [details[k] for k in keys]
    return out


async def dashboard_raw(conn: asyncpg.Connection, flt: UsageFilter, bucket: str, tops: bool) -> dict[str, Any]:
    """The dashboard straight from ``usage_log`` (exact p50): for a filter the rollups cannot express,
    and the reference the rollup tests compare with."""
    where, args = flt.where()
    agg = ("count(*) AS requests, count(*) FILTER (WHERE status = 'success') AS succeeded, "
           "count(*) FILTER (WHERE byok) AS byok_requests, "
           "COALESCE(sum(credits_charged), 0)::bigint AS credits_charged, COALESCE(sum(cost_usd), 0) AS cost_usd, "
           "COALESCE(sum(prompt_tokens), 0)::bigint AS prompt_tokens, "
           "COALESCE(sum(completion_tokens), 0)::bigint AS completion_tokens, "
           "percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_latency_ms")
    out: dict[str, Any] = {}
    async with conn.transaction(readonly=True):
        out["totals"] = dict(await conn.fetchrow(f"SELECT {agg} FROM usage_log{where}", *args))
        out["series"] = [dict(r) for r in await conn.fetch(
            f"SELECT date_trunc('{bucket}', created_at, 'UTC') AS t, {agg} FROM usage_log{where} "
            "GROUP BY 1 ORDER BY 1", *args)]
        for name, column in (("by_level", "power_level"), ("by_provider", "provider"), ("by_model", "model_group")):
            out[name] = [dict(r) for r in await conn.fetch(
                f"SELECT {column} AS key, {agg} FROM usage_log{where} GROUP BY 1 "
                "ORDER BY credits_charged DESC, requests DESC, 1 LIMIT 50", *args)]
        if tops:
            out["top_accounts"] = [dict(r) for r in await conn.fetch(
                f"SELECT account AS key, {agg} FROM usage_log{where} GROUP BY 1 "
                f"ORDER BY credits_charged DESC, requests DESC, 1 LIMIT {TOP_N}", *args)]
    return out
