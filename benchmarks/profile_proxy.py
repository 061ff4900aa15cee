"""Where does a capability's time go? CPU per request and a py-spy profile diff of two proxies.

    python benchmarks/profile_proxy.py --base none --plugins credits --duration 20

Starts the fake provider and two real proxies with plugins loaded (``--base``: the capabilities of
the reference proxy, ``none`` = every hook registered but disabled; ``--plugins``: the ones under
study), drives each with one ``wrk`` client for ``--duration`` seconds while ``py-spy record --gil``
samples its worker (``--py-spy``, default: on PATH), and reports:

* CPU per request of the proxy's process tree, Postgres, Redis, everything else, and the whole
  machine (from /proc), and p50 latency — the plugins' work in Redis and Postgres competes with the
  proxy for the same two cores;
* the functions whose inclusive samples per request grew the most from base to plugins, in
  milliseconds of CPU per request (samples / rate / requests).

``py-spy`` is not a project dependency (``pip install py-spy==0.4.3`` in any venv). Without ``--gil``
py-spy counts the idle event loop as busy in this container, so only GIL-holding samples are used.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio  # noqa: E402

import httpx  # noqa: E402
from cpu import cpu_by_group  # noqa: E402
from bench_proxy import BENCH_KEY, chosen_of, plugin_settings, proxy_env, run_wrk  # noqa: E402

from tests.support.fake_provider import free_port  # noqa: E402
from tests.support.proxy import ProxyProcess, test_config  # noqa: E402
from tests.support.services import redis_prefix, throwaway_database  # noqa: E402

def worker_pid(pid: int) -> int:
    """The uvicorn worker: the deepest python descendant (one worker only)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return worker_pid(int(children[0])) if children else pid


def parse_raw(path: Path) -> tuple[collections.Counter[str], int]:
    """Inclusive samples per function from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0] + ")" if " (" in frame else frame
            if name not in seen:
                seen.add(name)
                inclusive[name] += n
    return inclusive, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="none", help="capabilities of the reference proxy ('none' or a list)")
    parser.add_argument("--plugins", default="credits")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--clients", type=int, default=1, help="wrk connections")
    parser.add_argument("--workers", type=int, default=1, help="proxy workers (py-spy samples one of them)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/tools/bin/py-spy",
                        help="py-spy binary, or 'none' for the CPU table only")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--keep", type=Path, help="copy the raw profiles here")
    args = parser.parse_args()
    return asyncio.run(profile(args))


async def profile(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="profile_"))
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.support.fake_provider", "--port", str(fake_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies: list[ProxyProcess] = []
    try:
        async with throwaway_database("lp_prof") as dsn, redis_prefix() as prefix:
            fake_url = f"http://127.0.0.1:{fake_port}/v1"
            env = proxy_env(workdir, dsn, byok=True)
            variants = {}
            for label, spec in (("base", args.base), ("plugins", args.plugins)):
                cfg = test_config(fake_url, {"litellm_plugins": {"redis_key_prefix": prefix,
                                                                 **plugin_settings(chosen_of(spec))}})
                proxy = ProxyProcess(cfg, workdir, env, name=label, num_workers=args.workers)
                proxies.append(proxy)
                proxy.start()
                model = "eco" if "routing" in chosen_of(spec) else "deepinfra-llama-3.1-8b"
                httpx.post(proxy.url + "/v1/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {BENCH_KEY}"},
                           json={"model": model, "messages": [{"role": "user", "content": "warm"}]}
                           ).raise_for_status()
                variants[label] = (proxy, model)
            results = {}
            for label, (proxy, model) in variants.items():
                body = {"model": model, "messages": [{"role": "user", "content": "Say something short."}],
                        "max_tokens": 16}
                run_wrk(proxy.url, body, 1, 3, workdir)  # warm-up
                assert proxy.process is not None
                worker = worker_pid(proxy.process.pid)
                raw = workdir / f"{label}.txt"
                spy = None
                if args.py_spy != "none":
                    spy = subprocess.Popen([args.py_spy, "record", "--gil", "--nonblocking", "-r", str(args.rate),
                                            "-p", str(worker), "-d", str(args.duration + 1), "-f", "raw",
                                            "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                before = cpu_by_group(proxy.process.pid)
                r = run_wrk(proxy.url, body, args.clients, args.duration, workdir)
                after = cpu_by_group(proxy.process.pid)
                inclusive, total = collections.Counter(), 0
                if spy is not None:
                    spy.wait(timeout=60)
                    inclusive, total = parse_raw(raw)
                machine = {k: (after[k] - before[k]) / r["requests"] * 1000 for k in after}
                results[label] = (r, machine, inclusive, total)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(raw, args.keep / raw.name)
            report(results, args)
            return 0
    finally:
        for proxy in proxies:
            proxy.stop()
        fake.terminate()
        fake.wait(timeout=10)


def report(results: dict, args: argparse.Namespace) -> None:
    print(f"\nbase={args.base} plugins={args.plugins} duration={args.duration}s rate={args.rate}/s, {args.clients} client(s), "
          f"{args.workers} worker(s)")
    per_req = {}
    groups = list(next(iter(results.values()))[1])
    print("CPU ms per request, by process group (machine = all cores busy, /proc/stat):")
    print(f"{'':8s} {'p50 ms':>8s} {'requests':>8s} " + " ".join(f"{g:>9s}" for g in groups) + "  GIL samples")
    for label, (r, machine, inclusive, total) in results.items():
        scale = 1000 / args.rate / r["requests"]  # ms of CPU per request per sample
        per_req[label] = {name: n * scale for name, n in inclusive.items()}
        print(f"{label:8s} {r['p50_ms']:8.2f} {r['requests']:8.0f} " + " ".join(f"{machine[g]:9.3f}" for g in groups)
              + f"  {total * scale:.2f}")
    if not any(per_req.values()):
        return
    base, plug = per_req["base"], per_req["plugins"]
    diff = sorted(((plug.get(k, 0) - base.get(k, 0), k) for k in set(base) | set(plug)), reverse=True)
    print(f"\ntop {args.top} functions by added inclusive CPU ms/request (plugins - base):")
    for delta, name in diff[: args.top]:
        print(f"  {delta:+7.3f}  base={base.get(name, 0):6.3f}  plugins={plug.get(name, 0):6.3f}  {name}")


if __name__ == "__main__":
    raise SystemExit(main())
