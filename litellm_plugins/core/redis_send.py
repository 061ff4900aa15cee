"""A Redis connection for writes that must leave the process now but need no answer now.

Why not redis-py: every redis-py call awaits (pool lock, connection check, drain, the answer), and
any await on the response path lets the event loop run whatever else is ready first — LiteLLM's
logging of earlier requests, for instance. Measured in the proxy (one client, credits on): the
response-path journal call took 3.0 ms median of wall time although Redis answered in ~0.3 ms, all
of it other tasks running before the response could leave. ``send`` here is synchronous: the
command is packed and handed to the kernel (``transport.write``) before it returns, and answers are
parsed as they arrive (hiredis, FIFO). An error answer goes to the callback given with the command.

One connection per worker, opened by ``connect`` at startup and reopened in the background after
it drops; while it is down ``send`` returns False and the caller uses its awaited path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

log = logging.getLogger("litellm_plugins.redis")

ErrorCallback = Callable[[hiredis.ReplyError], None]
ReplyCallback = Callable[[Any], None]
MAX_PENDING = 10_000  # unanswered commands; past it Redis is treated as unavailable


def pack(args: tuple[Any, ...]) -> bytes:
    """RESP encoding of one command (bulk strings; ints and str are sent as their decimal / UTF-8)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _OnReply:
    """Marks a callback that wants every answer (``send(on_reply=...)``), not only errors."""

    __slots__ = ("callback",)

    def __init__(self, callback: ReplyCallback) -> None:
        self.callback = callback


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: SendOnlyRedis) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.owner._answer(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(self)


class SendOnlyRedis:
    def __init__(self, url: str, connect_timeout: float = 2.0) -> None:
        params = parse_url(url)
        self.host = params.get("host", "localhost")
        self.port = int(params.get("port", 6379))
        self.db = int(params.get("db", 0))
        self.username = params.get("username")
        self.password = params.get("password")
        self.tls = params.get("connection_class") is SSLConnection
        self.connect_timeout = connect_timeout
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._pending: collections.deque[asyncio.Future[Any] | ErrorCallback | _OnReply | None] = collections.deque()
        self.generation = 0  # +1 per connection opened: state learnt on an older one may be stale
        self._loaded: set[str] = set()  # scripts sent as EVAL on this connection (Redis caches them)
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> bool:
        """Open the connection (AUTH / SELECT as the URL says); False, logged, if Redis is not there."""
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await asyncio.wait_for(loop.create_connection(
                lambda: _Protocol(self), self.host, self.port,
                ssl=ssl.create_default_context() if self.tls else None), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            log.warning("send-only Redis connection to %s:%s failed: %s", self.host, self.port, exc)
            return False
        self._transport, self._protocol = transport, protocol
        self.generation += 1
        self._loaded = set()
        setup: list[tuple[Any, ...]] = []
        if self.password:
            setup.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        try:
            for command in setup:
                answer = await asyncio.wait_for(self.request(*command), self.connect_timeout)
                if isinstance(answer, hiredis.ReplyError):
                    raise OSError(f"{command[0]} refused")
        except (OSError, TimeoutError, ConnectionError) as exc:
            log.warning("send-only Redis connection setup failed: %s", exc)
            transport.close()
            return False
        return True

    def request(self, *args: Any) -> asyncio.Future[Any]:
        """Send now; the future gets the answer (connection setup, and the credits hold: one write, one await)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._write(args, fut):
            fut.set_exception(ConnectionError("send-only Redis connection is down"))
        return fut

    def send(self, *args: Any, on_error: ErrorCallback | None = None, on_reply: ReplyCallback | None = None) -> bool:
        """Hand the command to the kernel without yielding; False if the connection is down.

        ``on_reply`` gets every answer (errors included) as it is parsed; otherwise ``on_error``
        gets error answers only. Callbacks run on the event loop and must not block."""
        return self._write(args, _OnReply(on_reply) if on_reply is not None else on_error)

    def in_kernel(self) -> bool:
        """Has every byte written so far left this process? ``transport.write`` hands bytes to the
        kernel at once only while the transport's own buffer is empty; when the kernel's socket
        buffer was full (Redis slow to read) or the transport is paused, the rest waits in this
        process's memory (asyncio's buffer; uvloop's buffer or libuv's write queue), where a kill -9
        would lose it. The kernel keeps sending what it has after the process dies."""
        transport = self._transport
        return transport is not None and transport.get_write_buffer_size() == 0

    def send_script(self, script: Any, keys: Sequence[str], args: Sequence[Any], *,
                    on_error: ErrorCallback | None = None, on_reply: ReplyCallback | None = None) -> bool:
        """``send`` of a redis-py registered script (``.sha``, ``.script``). The first time on a
        connection it goes as ``EVAL`` with the script's text (Redis caches it), then as ``EVALSHA``:
        a Redis restarted meanwhile (a new connection) never answers NOSCRIPT, which would re-send
        the command only when the answer arrives -- after the caller's response may have left. One
        that forgot it anyway (SCRIPT FLUSH) answers NOSCRIPT and the command is re-sent once as
        ``EVAL``, the callbacks getting that answer instead."""
        command = (len(keys), *keys, *args)
        if script.sha not in self._loaded:
            sent = self.send("EVAL", script.script, *command, on_error=on_error, on_reply=on_reply)
            if sent:
                self._loaded.add(script.sha)
            return sent

        def resent(reply: Any) -> bool:
            return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT") and \
                self.send("EVAL", script.script, *command, on_error=on_error, on_reply=on_reply)

        if on_reply is not None:
            def replied(reply: Any) -> None:
                if not resent(reply):
                    on_reply(reply)
            return self.send("EVALSHA", script.sha, *command, on_reply=replied)

        def failed(error: hiredis.ReplyError) -> None:
            if resent(error):
                return
            if on_error is not None:
                on_error(error)
            else:
                log.warning("send-only Redis command failed: %s", error)
        return self.send("EVALSHA", script.sha, *command, on_error=failed)

    def _write(self, args: tuple[Any, ...], waiter: asyncio.Future[Any] | ErrorCallback | _OnReply | None) -> bool:
        if not self.connected or len(self._pending) >= MAX_PENDING:
            self._ensure_reconnect()
            return False
        assert self._transport is not None
        self._transport.write(pack(args))
        self._pending.append(waiter)
        return True

    def _answer(self, reply: Any) -> None:
        waiter = self._pending.popleft() if self._pending else None
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(reply)
        elif isinstance(waiter, _OnReply):
            try:
                waiter.callback(reply)
            except Exception:  # noqa: BLE001 - a callback must not break the reader
                log.exception("send-only Redis reply callback failed")
        elif isinstance(reply, hiredis.ReplyError):
            if waiter is not None:
                waiter(reply)
            else:
                log.warning("send-only Redis command failed: %s", reply)

    def _lost(self, protocol: _Protocol) -> None:
        if protocol is not self._protocol:
            return
        self._transport = self._protocol = None
        pending, self._pending = self._pending, collections.deque()
        for waiter in pending:
            if isinstance(waiter, asyncio.Future) and not waiter.done():
                waiter.set_exception(ConnectionError("Redis connection lost"))
            elif isinstance(waiter, _OnReply):
                with contextlib.suppress(Exception):
                    waiter.callback(ConnectionError("Redis connection lost"))
        if pending:
            log.warning("send-only Redis connection lost with %d unanswered commands", len(pending))
        self._ensure_reconnect()

    def _ensure_reconnect(self) -> None:
        if self._closed or (self._reconnect is not None and not self._reconnect.done()):
            return
        try:
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())
        except RuntimeError:  # no running loop (shutdown)
            pass

    async def _reconnect_loop(self) -> None:
        delay = 0.1
        while not self._closed and not self.connected:
            if await self.connect():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._transport is not None:
            self._transport.close()
