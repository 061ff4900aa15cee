"""Added latency at one client, to a tenth of a millisecond: bare and plugins proxies take turns.

    python benchmarks/bench_interleaved.py --plugins credits --requests 3000

``bench_proxy.py`` runs ``wrk`` for seconds at a time on each proxy in turn. On this shared 2-core VM
the bare proxy's own p50 swings between ~15 and ~25 ms from one 3-second round to the next, faster
than rounds can be paired, so its 95% intervals stay about a millisecond wide — too wide for a
0.5 ms target. Here a single closed-loop client (one request in flight, one keep-alive connection
per proxy, like ``wrk -c 1``) sends ``--burst`` requests to one proxy, then as many to the other,
alternating which goes first, until each has served ``--requests``. Machine slowdowns longer than a
burst (~0.2 s) hit both alike. Caveat: each proxy is idle while the other serves its burst, so
about half of its periodic background work (the credits writer's flushes, health refreshes) runs
when no request of its own is waiting, which ``wrk -c 1`` would not allow; background costs are
under-counted by about half. The request-path costs are counted in full.

Reports per mode: p50, p99 and mean of each, and the added p50 / mean with a 95% interval from a
bootstrap over burst pairs (pairs stay together, so the time pairing survives resampling). The
client is a minimal HTTP/1.1 reader on asyncio streams, identical for both proxies; its own cost is
in both latencies and cancels in the difference. Same setup as ``bench_proxy.py`` (fake provider,
throwaway database, Redis prefix, same key and auth).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy import BENCH_KEY, chosen_of, overrides_of, two_proxies  # noqa: E402


class Connection:
    """One keep-alive HTTP/1.1 connection; reads a response by Content-Length or chunked framing."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> tuple[int, float]:
        """Send ``raw`` and read the whole response: (status, milliseconds from write to last byte)."""
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        start = time.perf_counter()
        self.writer.write(raw)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError):
            # The server closed the idle keep-alive connection (uvicorn: after 5 s, e.g. while the
            # other proxy warmed up on a loaded machine) before reading this request: reopen, resend.
            await self.close()
            await self._open()
            assert self.reader is not None and self.writer is not None
            start = time.perf_counter()
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                await self.reader.readexactly(size + 2)
        elapsed = (time.perf_counter() - start) * 1000
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, elapsed

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


# The request each API gets: the same short prompt and output limit in each API's own shape.
API_PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}


def api_body(api: str, model: str, stream: bool) -> dict:
    prompt = "Say something short."
    if api == "responses":
        body = {"model": model, "input": prompt, "max_output_tokens": 16}
    else:   # chat and Anthropic messages share the shape of this simple request
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16}
    if stream:
        body["stream"] = True
    return body


def raw_request(url: str, model: str, stream: bool, api: str = "chat") -> bytes:
    payload = json.dumps(api_body(api, model, stream)).encode()
    host = urlsplit(url).netloc
    return (f"POST {API_PATHS[api]} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {BENCH_KEY}\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload


def p(values: list[float], q: float) -> float:
    """The q-quantile, nearest rank (for p99; p50s use statistics.median like the bootstrap)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bootstrap(pairs: list[tuple[list[float], list[float]]], stat, n: int = 1000) -> tuple[float, float, float]:
    """stat(plugins) - stat(bare) over all bursts, and a 95% interval resampling burst pairs."""
    def diff(sample: list[tuple[list[float], list[float]]]) -> float:
        bare = [x for b, _ in sample for x in b]
        plug = [x for _, q in sample for x in q]
        return stat(plug) - stat(bare)
    rng = random.Random(0)
    boots = sorted(diff(rng.choices(pairs, k=len(pairs))) for _ in range(n))
    return diff(pairs), boots[int(0.025 * n)], boots[int(0.975 * n) - 1]


async def run_mode(variants: dict, stream: bool, requests: int, burst: int) -> dict:
    conns = {name: Connection(proxy.url) for name, (proxy, _) in variants.items()}
    raws = {name: raw_request(proxy.url, model, stream) for name, (proxy, model) in variants.items()}
    errors = {name: 0 for name in variants}
    for name in variants:  # warm-up, not recorded
        for _ in range(100):
            await conns[name].request(raws[name])
    pairs: list[tuple[list[float], list[float]]] = []
    for i in range(max(1, requests // burst)):
        order = ["bare", "plugins"] if i % 2 == 0 else ["plugins", "bare"]
        got: dict[str, list[float]] = {}
        for name in order:
            got[name] = []
            for _ in range(burst):
                status, ms = await conns[name].request(raws[name])
                if status != 200:
                    errors[name] += 1
                got[name].append(ms)
        pairs.append((got["bare"], got["plugins"]))
    for conn in conns.values():
        await conn.close()
    bare = [x for b, _ in pairs for x in b]
    plug = [x for _, q in pairs for x in q]
    return {"bare": bare, "plugins": plug, "errors": errors,
            "added_p50": bootstrap(pairs, statistics.median),
            "added_mean": bootstrap(pairs, statistics.fmean)}


HEADER = ("| mode | bare p50 ms | plugins p50 ms | added p50 ms [95% CI] | bare mean ms | plugins mean ms "
          "| added mean ms [95% CI] | bare p99 ms | plugins p99 ms |\n|---|---|---|---|---|---|---|---|---|")


def table_row(mode: str, r: dict) -> str:
    d, lo, hi = r["added_p50"]
    m, mlo, mhi = r["added_mean"]
    bare, plug = r["bare"], r["plugins"]
    return (f"| {mode} | {statistics.median(bare):.2f} | {statistics.median(plug):.2f} "
            f"| {d:+.2f} [{lo:+.2f}, {hi:+.2f}] | {statistics.fmean(bare):.2f} | {statistics.fmean(plug):.2f} "
            f"| {m:+.2f} [{mlo:+.2f}, {mhi:+.2f}] | {p(bare, .99):.2f} | {p(plug, .99):.2f} |")


async def main_async(args: argparse.Namespace, chosen: set[str]) -> int:
    rows = []
    async with two_proxies(chosen, args.workers, args.model, args.overrides,
                           args.base) as (variants, served, _workdir):
        for mode in args.modes.split(","):
            result = await run_mode(variants, mode == "stream", args.requests, args.burst)
            rows.append((mode, result))
            print(f"{table_row(mode, result)} errors {result['errors']}", flush=True)
    print(f"\n### interleaved: plugins={','.join(sorted(chosen)) or 'none'} workers={args.workers} "
          f"requests={args.requests} per proxy, burst={args.burst}, model group={served}"
          f"{' set ' + ' '.join(args.set) if args.set else ''}\n")
    print(HEADER)
    for mode, r in rows:
        print(table_row(mode, r))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "served": served,
                                         "results": {m: {k: r[k] for k in ("bare", "plugins", "errors")}
                                                     for m, r in rows}}))
    return 1 if any(any(r["errors"].values()) for _, r in rows) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", default="all", help="comma list of capabilities, 'all', or 'none'")
    parser.add_argument("--modes", default="plain,stream")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per proxy and mode")
    parser.add_argument("--burst", type=int, default=10, help="requests to one proxy before switching")
    parser.add_argument("--model", default="auto",
                        help="model for the plugins proxy ('auto' = the group routing picks for eco)")
    parser.add_argument("--json", type=Path, help="write the raw latencies here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="a setting of the plugins proxy, e.g. credits.lease_requests=0 (repeatable)")
    parser.add_argument("--base-plugins", help="baseline = a plugins proxy with these capabilities instead of "
                                               "the bare proxy, e.g. all but metrics: guard,routing,byok,credits,health")
    args = parser.parse_args()
    try:
        args.overrides = overrides_of(args.set)
        args.base = chosen_of(args.base_plugins) if args.base_plugins else None
        chosen = chosen_of(args.plugins)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(main_async(args, chosen))


if __name__ == "__main__":
    raise SystemExit(main())
