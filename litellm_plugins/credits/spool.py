"""A durable, bounded on-disk spool for writes made while Postgres is down.

Each worker appends JSON lines to its own file (``O_APPEND`` + ``fsync`` under ``flock``); any
worker replays every unlocked file for the same database once Postgres answers again — at startup
too, so a proxy restart loses nothing. Every record is idempotent (keyed by hold id / usage id), so
a replay that is interrupted and repeated writes nothing twice.

Files are named after a hash of the database URL, so proxies for two databases sharing a spool
directory never replay each other's records.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("litellm_plugins.credits.spool")


class Spool:
    def __init__(self, directory: str, database_url: str, max_bytes: int) -> None:
        self.dir = Path(directory)
        self.db_tag = hashlib.sha256(database_url.encode()).hexdigest()[:12]
        self.path = self.dir / f"spool-{self.db_tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.max_bytes = max_bytes
        self.dropped = 0

    def _size(self) -> int:
        try:
            return sum(p.stat().st_size for p in self.dir.glob(f"spool-{self.db_tag}-*.jsonl"))
        except OSError:
            return 0

    def append(self, records: list[dict[str, Any]]) -> None:
        """Blocking (call via ``asyncio.to_thread``). Usage rows are dropped past the bound; money never."""
        if not records:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._size() > self.max_bytes:
            kept = [r for r in records if r.get("op") != "usage"]
            dropped = len(records) - len(kept)
            if dropped:
                self.dropped += dropped
                log.error("credits spool is full (%d bytes): dropped %d usage rows", self.max_bytes, dropped)
            records = kept
            if not records:
                return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink == 0:  # a replayer claimed and removed it meanwhile
                    continue
                os.write(fd, data)
                os.fsync(fd)
                return
            finally:
                os.close(fd)

    def files(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(self.dir.glob(f"spool-{self.db_tag}-*.jsonl"))

    def claim(self, path: Path) -> tuple[int, list[dict[str, Any]]] | None:
        """Lock one file (non-blocking) and read it; returns (fd, records) or None if busy/gone."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)
            return None
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        records = []
        for line in b"".join(chunks).splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.error("credits spool %s: skipping a torn line", path.name)
        return fd, records

    @staticmethod
    def finish(path: Path, fd: int, done: bool) -> None:
        try:
            if done:
                os.unlink(path)
        finally:
            os.close(fd)

    def pending(self) -> bool:
        return any(p.stat().st_size > 0 for p in self.files() if p.exists())
