"""The vault (Postgres), its audit trail, and the per-worker cache of decrypted keys.

Postgres holds only Fernet tokens. The request path reads a per-worker in-process cache that maps
an account to its keys (decrypted once, on a miss). A change to an account's keys (add, replace,
delete, rotation) publishes the account on a Redis channel; every worker of every instance drops
that account from its cache within milliseconds. The cache TTL bounds staleness if a message is
lost (e.g. while a worker's subscription reconnects — it then drops its whole cache).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import asyncpg

from litellm_plugins.byok.crypto import Cipher, mask

log = logging.getLogger("litellm_plugins.byok")

Policy = Literal["prefer", "only"]
POLICIES: tuple[str, ...] = ("prefer", "only")


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A decrypted key as the request path sees it. ``repr`` never shows the secret."""

    provider: str
    policy: str
    secret: str | None  # None: stored, but not decryptable with the configured encryption keys

    def __repr__(self) -> str:
        shown = mask(self.secret) if self.secret else None
        return f"StoredKey(provider={self.provider!r}, policy={self.policy!r}, secret={shown!r})"


@dataclass(frozen=True)
class KeyInfo:
    """Metadata of a stored key, safe to return from the API."""

    account: str
    provider: str
    policy: str
    last4: str
    created_at: datetime
    last_used_at: datetime | None
    last_tested_at: datetime | None
    last_test_ok: bool | None

    def public(self) -> dict[str, Any]:
        return {
            "account": self.account, "provider": self.provider, "policy": self.policy,
            "key": "…" + self.last4,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "last_tested_at": self.last_tested_at.isoformat() if self.last_tested_at else None,
            "last_test_ok": self.last_test_ok,
        }


_INFO_COLUMNS = "account, provider, policy, last4, created_at, last_used_at, last_tested_at, last_test_ok"


def _info(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(**dict(row))


# ---- audit -------------------------------------------------------------------------------------

async def audit(conn: asyncpg.Connection | asyncpg.Pool, account: str, provider: str, action: str,
                actor: str, detail: dict[str, Any] | None = None) -> None:
    await conn.execute(
        "INSERT INTO byok_audit (account, provider, action, actor, detail) VALUES ($1, $2, $3, $4, $5::jsonb)",
        account, provider, action, actor, json.dumps(detail) if detail is not None else None)


async def audit_rows(pool: asyncpg.Pool, account: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT id, at, account, provider, action, actor, detail FROM byok_audit "
        "WHERE ($1::text IS NULL OR account = $1) ORDER BY id DESC LIMIT $2", account, limit)
    return [{"id": r["id"], "at": r["at"].isoformat(), "account": r["account"], "provider": r["provider"],
             "action": r["action"], "actor": r["actor"],
             "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]


# ---- vault -------------------------------------------------------------------------------------

async def put_key(pool: asyncpg.Pool, cipher: Cipher, account: str, provider: str, secret: str,
                  policy: str, actor: str) -> tuple[KeyInfo, bool]:
    """Add or replace; returns the stored metadata and whether a key was replaced."""
    token = cipher.encrypt(secret)
    async with pool.acquire() as conn, conn.transaction():
        existed = await conn.fetchval(
            "SELECT 1 FROM byok_keys WHERE account = $1 AND provider = $2 FOR UPDATE", account, provider)
        row = await conn.fetchrow(
            f"""INSERT INTO byok_keys (account, provider, ciphertext, enc_key_id, last4, policy)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (account, provider) DO UPDATE SET
                    ciphertext = EXCLUDED.ciphertext, enc_key_id = EXCLUDED.enc_key_id,
                    last4 = EXCLUDED.last4, policy = EXCLUDED.policy, created_at = CURRENT_TIMESTAMP,
                    last_used_at = NULL, last_tested_at = NULL, last_test_ok = NULL
                RETURNING {_INFO_COLUMNS}""",
            account, provider, token, cipher.current_key_id, secret[-4:], policy)
        await audit(conn, account, provider, "replace" if existed else "add", actor,
                    {"policy": policy, "key": mask(secret)})
    return _info(row), bool(existed)


async def set_policy(pool: asyncpg.Pool, account: str, provider: str, policy: str, actor: str) -> KeyInfo | None:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE byok_keys SET policy = $3 WHERE account = $1 AND provider = $2 RETURNING {_INFO_COLUMNS}",
            account, provider, policy)
        if row is not None:
            await audit(conn, account, provider, "policy", actor, {"policy": policy})
    return _info(row) if row is not None else None


async def delete_key(pool: asyncpg.Pool, account: str, provider: str, actor: str) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetchval(
            "DELETE FROM byok_keys WHERE account = $1 AND provider = $2 RETURNING 1", account, provider)
        if deleted:
            await audit(conn, account, provider, "delete", actor)
    return bool(deleted)


async def list_keys(pool: asyncpg.Pool, account: str | None) -> list[KeyInfo]:
    rows = await pool.fetch(
        f"SELECT {_INFO_COLUMNS} FROM byok_keys WHERE ($1::text IS NULL OR account = $1) "
        "ORDER BY account, provider", account)
    return [_info(r) for r in rows]


async def get_info(pool: asyncpg.Pool, account: str, provider: str) -> KeyInfo | None:
    row = await pool.fetchrow(
        f"SELECT {_INFO_COLUMNS} FROM byok_keys WHERE account = $1 AND provider = $2", account, provider)
    return _info(row) if row is not None else None


async def load_secret(pool: asyncpg.Pool, cipher: Cipher, account: str, provider: str) -> str | None:
    token = await pool.fetchval(
        "SELECT ciphertext FROM byok_keys WHERE account = $1 AND provider = $2", account, provider)
    return cipher.decrypt(token) if token is not None else None


async def record_test(pool: asyncpg.Pool, account: str, provider: str, ok: bool, actor: str,
                      status: int | None) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE byok_keys SET last_tested_at = CURRENT_TIMESTAMP, last_test_ok = $3 "
            "WHERE account = $1 AND provider = $2", account, provider, ok)
        await audit(conn, account, provider, "test", actor, {"ok": ok, "status": status})


async def load_account(pool: asyncpg.Pool, cipher: Cipher, account: str) -> dict[str, StoredKey]:
    """Every key of one account, decrypted (a cache miss on the request path: one indexed query)."""
    rows = await pool.fetch(
        "SELECT provider, policy, ciphertext FROM byok_keys WHERE account = $1", account)
    keys: dict[str, StoredKey] = {}
    for row in rows:
        try:
            keys[row["provider"]] = StoredKey(row["provider"], row["policy"], cipher.decrypt(row["ciphertext"]))
        except Exception:  # noqa: BLE001 - one undecryptable row must not break the account's other keys
            log.error("byok: stored key for %s/%s cannot be decrypted with the configured encryption keys",
                      account, row["provider"])
            # Kept (without a secret) so its policy still holds: `only` must not become "platform key".
            keys[row["provider"]] = StoredKey(row["provider"], row["policy"], None)
    return keys


async def mark_used(pool: asyncpg.Pool, uses: Iterable[tuple[str, str, datetime]]) -> int:
    """Record last use; audit ``first_use`` once per key per UTC day (row lock: once across workers)."""
    audited = 0
    async with pool.acquire() as conn:
        for account, provider, at in uses:
            async with conn.transaction():
                old = await conn.fetchrow(
                    "SELECT last_used_at FROM byok_keys WHERE account = $1 AND provider = $2 FOR UPDATE",
                    account, provider)
                if old is None:
                    continue
                previous = old["last_used_at"]
                if previous is not None and previous >= at:
                    continue
                await conn.execute(
                    "UPDATE byok_keys SET last_used_at = $3 WHERE account = $1 AND provider = $2",
                    account, provider, at)
                if previous is None or previous.astimezone(timezone.utc).date() < at.date():
                    await audit(conn, account, provider, "first_use", account, {"day": at.date().isoformat()})
                    audited += 1
    return audited


# ---- rotation ----------------------------------------------------------------------------------

async def rotate(pool: asyncpg.Pool, cipher: Cipher, batch_size: int = 100, actor: str = "cli") -> tuple[int, int]:
    """Re-encrypt every row not yet under the newest key; returns (rotated, failed).

    Batches commit as they go, so an interrupted run resumes where it stopped. Rows are locked with
    ``SKIP LOCKED`` and updated only if their ciphertext is unchanged, so a concurrent replace or
    delete by the owner (or a second rotate) never loses a write.
    """
    rotated = failed = 0
    failed_rows: set[tuple[str, str]] = set()
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT account, provider, ciphertext FROM byok_keys WHERE enc_key_id <> $1 "
                "ORDER BY account, provider LIMIT $2 FOR UPDATE SKIP LOCKED",
                cipher.current_key_id, batch_size + len(failed_rows))
            todo = [r for r in rows if (r["account"], r["provider"]) not in failed_rows]
            if not todo:
                return rotated, failed
            for row in todo:
                try:
                    token = cipher.reencrypt(row["ciphertext"])
                except Exception:  # noqa: BLE001 - report and continue with the others
                    failed_rows.add((row["account"], row["provider"]))
                    failed += 1
                    continue
                await conn.execute(
                    "UPDATE byok_keys SET ciphertext = $3, enc_key_id = $4 "
                    "WHERE account = $1 AND provider = $2 AND ciphertext = $5",
                    row["account"], row["provider"], token, cipher.current_key_id, row["ciphertext"])
                await audit(conn, row["account"], row["provider"], "rotate", actor,
                            {"enc_key_id": cipher.current_key_id})
                rotated += 1


# ---- cache -------------------------------------------------------------------------------------

class KeyCache:
    """account -> {provider: StoredKey}, per worker; empty dicts cache "has no keys" too.

    ``generation`` guards against a slow load racing an invalidation: a load started before an
    invalidation of its account is not stored.
    """

    def __init__(self, ttl_s: float, max_accounts: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self.max_accounts = max_accounts
        self._entries: dict[str, tuple[float, dict[str, StoredKey]]] = {}
        self._generation: dict[str, int] = {}
        self._global_generation = 0
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, account: str) -> dict[str, StoredKey] | None:
        entry = self._entries.get(account)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(account, None)
            return None
        return entry[1]

    def token(self, account: str) -> tuple[int, int]:
        return self._global_generation, self._generation.get(account, 0)

    def put(self, account: str, keys: dict[str, StoredKey], token: tuple[int, int],
            ttl_s: float | None = None) -> bool:
        if token != self.token(account):
            return False
        if len(self._entries) >= self.max_accounts:
            self._entries.clear()
        self._entries[account] = (time.monotonic() + min(ttl_s or self.ttl_s, self.ttl_s), keys)
        return True

    def invalidate(self, account: str) -> None:
        self._generation[account] = self._generation.get(account, 0) + 1
        self._entries.pop(account, None)
        if len(self._generation) > 4 * self.max_accounts:
            self._generation.clear()
            self._global_generation += 1

    def clear(self) -> None:
        self._global_generation += 1
        self._entries.clear()

    def lock(self, account: str) -> asyncio.Lock:
        lock = self._locks.get(account)
        if lock is None:
            if len(self._locks) > self.max_accounts:
                self._locks.clear()
            lock = self._locks[account] = asyncio.Lock()
        return lock

    def __len__(self) -> int:
        return len(self._entries)
