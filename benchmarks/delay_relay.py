"""A TCP relay that adds a fixed delay each way: Redis "one network hop away" on a single machine.

Why: on loopback a Redis round trip costs ~0.1 ms, so what a design saves by not waiting for
Redis is hard to see; in production Redis is usually on another host (0.2-1 ms). Point the proxy
under test at this relay to measure that case:

    python benchmarks/delay_relay.py --listen 6390 --target 127.0.0.1:6379 --delay-ms 0.25 &
    TEST_REDIS_URL=redis://127.0.0.1:6390/0 python benchmarks/bench_interleaved.py --plugins credits

Threads and ``time.sleep`` rather than asyncio: the event loop's epoll timeout has 1 ms
granularity, which turned a 0.25 ms delay into 2.3 ms round trips. Each direction of each
connection has a reader and a writer thread; bytes keep their order. Kernel ``tc netem`` would be
the cleaner tool but needs the sch_netem module, which this VM does not have. The relay's own CPU
runs on the same machine as everything else.
"""

from __future__ import annotations

import argparse
import queue
import socket
import threading
import time


def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
    pending: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def writer() -> None:
        while True:
            due, data = pending.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                dst.sendall(data)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        pending.put((time.monotonic() + delay, data))
        if not data:
            return


def _handle(client: socket.socket, host: str, port: int, delay: float) -> None:
    try:
        upstream = socket.create_connection((host, port))
    except OSError:
        client.close()
        return
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=_pump, args=(client, upstream, delay), daemon=True).start()
    threading.Thread(target=_pump, args=(upstream, client, delay), daemon=True).start()


def serve(listen: int, host: str, port: int, delay: float) -> None:
    server = socket.create_server(("127.0.0.1", listen), reuse_port=False)
    while True:
        client, _ = server.accept()
        _handle(client, host, port, delay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, default=6390)
    parser.add_argument("--target", default="127.0.0.1:6379")
    parser.add_argument("--delay-ms", type=float, default=0.25, help="added each way (RTT + 2x this)")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    serve(args.listen, host, int(port), args.delay_ms / 1000)


if __name__ == "__main__":
    main()
