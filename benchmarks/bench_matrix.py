"""Several proxies in one run, taking turns: LiteLLM releases side by side, and settings on vs off.

    python benchmarks/bench_matrix.py --versions 1.108.7,1.102.4 \\
        --variant guard-off:guard.enabled=false --variant console-off:console.enabled=false
    python benchmarks/bench_matrix.py --apis chat,responses,messages
    python benchmarks/bench_matrix.py --checkout main:/work/main     # this checkout vs another, one run

``--apis``: the same short request on chat completions, the Responses API (``/v1/responses``) and
Anthropic Messages (``/v1/messages``); ``eco``'s group speaks chat completions upstream, so LiteLLM
translates the other two on both proxies alike. For each LiteLLM release in ``--versions`` it starts a **bare** proxy (no startup hook, no callbacks)
and the proxy **with every capability** (the project's config), all on one fake provider, one
throwaway database and one Redis prefix. Each ``--variant NAME:KEY.PATH=VALUE[,KEY.PATH=VALUE]`` adds
one more plugins proxy on the first release with those settings changed; each ``--checkout NAME:PATH``
one more with this checkout's config but the ``litellm_plugins`` package of the checkout at PATH (e.g.
the main branch before a change: the change's own cost, measured in one run). A release other than the
one this interpreter runs comes from ``.venv-litellm-<version>`` (``LITELLM_VERSION=<version>
scripts/dev-env.sh`` builds it); our package is imported from this checkout by every proxy.

Why one run: on a shared 2-core VM a proxy's p50 drifts by several ms between minutes, so numbers
from two runs cannot be compared. Here one closed-loop client (one request in flight, one keep-alive
connection per proxy) sends ``--burst`` requests to each proxy in turn, in a shuffled order each
cycle, until each has served ``--requests``: a slowdown longer than a cycle hits every proxy alike.
Reports per proxy: p50, mean, p99, and per plugins proxy the p50 ratio to the bare proxy of its own
release and the added p50 with a 95% bootstrap interval over cycles (cycles stay together).
Same caveat as ``bench_interleaved.py``: background work partly runs while a proxy is idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_interleaved import API_PATHS, Connection, p, raw_request  # noqa: E402
from bench_proxy import (BENCH_KEY, CAPABILITIES, ROOT, overrides_of, plugin_settings,  # noqa: E402
                         proxy_env)

import httpx  # noqa: E402

from tests.support.fake_provider import free_port  # noqa: E402
from tests.support.proxy import ProxyProcess, deep_merge, test_config  # noqa: E402
from tests.support.services import redis_prefix, throwaway_database  # noqa: E402


def installed_litellm() -> str:
    from importlib.metadata import version
    return version("litellm")


def litellm_bin(release: str) -> Path:
    if release == installed_litellm():
        return Path(sys.executable).with_name("litellm")
    path = ROOT / f".venv-litellm-{release}" / "bin" / "litellm"
    if not path.exists():
        raise SystemExit(f"no LiteLLM {release} here: run `LITELLM_VERSION={release} bash scripts/dev-env.sh` first")
    return path


def parse_variant(spec: str) -> tuple[str, dict]:
    name, sep, settings = spec.partition(":")
    if not sep or not name or not settings:
        raise ValueError(f"--variant wants NAME:KEY.PATH=VALUE[,KEY.PATH=VALUE], got {spec!r}")
    # split before each KEY.PATH=, so a value may hold commas (a YAML flow list of exporters)
    return name, overrides_of(re.split(r",(?=[\w.]+=)", settings))


async def served_group(proxy: ProxyProcess, model: str) -> str:
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {BENCH_KEY}"},
                              json={"model": model, "messages": [{"role": "user", "content": "warm"}]})
    r.raise_for_status()
    return r.headers.get("x-litellm-plugins-model-group", model)


def bootstrap_ratio(cycles: list[dict[str, list[float]]], name: str, base: str, n: int = 1000):
    def stats(sample):
        plug = statistics.median([x for c in sample for x in c[name]])
        bare = statistics.median([x for c in sample for x in c[base]])
        return plug - bare, plug / bare
    rng = random.Random(0)
    boots = [stats(rng.choices(cycles, k=len(cycles))) for _ in range(n)]
    added = sorted(b[0] for b in boots)
    ratio = sorted(b[1] for b in boots)
    lo, hi = int(0.025 * n), int(0.975 * n) - 1
    d, r = stats(cycles)
    return (d, added[lo], added[hi]), (r, ratio[lo], ratio[hi])


async def run(args: argparse.Namespace) -> int:
    versions = [v for v in args.versions.split(",") if v]
    variants = [parse_variant(v) for v in args.variant]
    workdir = Path(tempfile.mkdtemp(prefix="bench_matrix_"))
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.support.fake_provider", "--port", str(fake_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies: dict[str, ProxyProcess] = {}
    base_of: dict[str, str] = {}
    try:
        async with throwaway_database("lp_bench") as dsn, redis_prefix() as prefix:
            fake_url = f"http://127.0.0.1:{fake_port}/v1"
            env = proxy_env(workdir, dsn, byok=True)
            every = plugin_settings(set(CAPABILITIES))
            for release in versions:
                bare_cfg = test_config(fake_url, {"litellm_plugins": {"redis_key_prefix": prefix,
                                                                      **plugin_settings(set())}})
                bare_cfg["litellm_settings"]["callbacks"] = []
                bare = f"bare {release}"
                proxies[bare] = ProxyProcess(bare_cfg, workdir, env, name=f"bare-{release}", plugins=False,
                                             litellm_bin=litellm_bin(release))
                plug_cfg = test_config(fake_url, {"litellm_plugins": {"redis_key_prefix": prefix, **every}})
                proxies[f"plugins {release}"] = ProxyProcess(plug_cfg, workdir, env, name=f"plugins-{release}",
                                                             litellm_bin=litellm_bin(release))
                base_of[f"plugins {release}"] = bare
            for name, settings in variants:
                cfg = test_config(fake_url, {"litellm_plugins": {"redis_key_prefix": prefix,
                                                                 **deep_merge(every, settings)}})
                key = f"{name} {versions[0]}"
                proxies[key] = ProxyProcess(cfg, workdir, env, name=f"{name}-{versions[0]}",
                                            litellm_bin=litellm_bin(versions[0]))
                base_of[key] = f"bare {versions[0]}"
            for name, path in (c.split(":", 1) for c in args.checkout):
                cfg = test_config(fake_url, {"litellm_plugins": {"redis_key_prefix": prefix, **every}})
                key = f"{name} {versions[0]}"
                proxies[key] = ProxyProcess(cfg, workdir, {**env, "PYTHONPATH": path}, name=f"{name}-{versions[0]}",
                                            litellm_bin=litellm_bin(versions[0]))
                base_of[key] = f"bare {versions[0]}"
            for proxy in proxies.values():
                proxy.start(wait=False)
            for proxy in proxies.values():
                proxy.wait_ready()
            served = await served_group(proxies[f"plugins {versions[0]}"], "eco")
            models = {k: (served if k.startswith("bare") else "eco") for k in proxies}
            print(f"plugins proxies ask for 'eco' (served by {served!r}); bare proxies name {served!r}", flush=True)
            rows = {}
            for api in args.apis.split(","):
                for mode in args.modes.split(","):
                    rows[f"{api} {mode}"] = await run_mode(proxies, models, api, mode == "stream",
                                                           args.requests, args.burst)
    finally:
        for proxy in proxies.values():
            proxy.stop()
        fake.terminate()
        fake.wait(timeout=10)
    print(f"\n### bench_matrix: releases {','.join(versions)}; apis {args.apis}; requests={args.requests} per proxy and mode, "
          f"burst={args.burst}; variants {' '.join(args.variant) or 'none'}\n")
    print("| api + mode | proxy | p50 ms | mean ms | p99 ms | p50 ratio to bare [95% CI] | added p50 ms [95% CI] | errors |")
    print("|---|---|---|---|---|---|---|---|")
    failed = False
    for mode, (cycles, errors) in rows.items():
        for name in proxies:
            lat = [x for c in cycles for x in c[name]]
            cells = ["", ""]
            if name in base_of:
                (d, dlo, dhi), (r, rlo, rhi) = bootstrap_ratio(cycles, name, base_of[name])
                cells = [f"{r:.3f} [{rlo:.3f}, {rhi:.3f}]", f"{d:+.2f} [{dlo:+.2f}, {dhi:+.2f}]"]
            failed |= errors[name] > 0
            print(f"| {mode} | {name} | {statistics.median(lat):.2f} | {statistics.fmean(lat):.2f} "
                  f"| {p(lat, .99):.2f} | {cells[0]} | {cells[1]} | {errors[name]} |")
    return 1 if failed else 0


async def run_mode(proxies: dict[str, ProxyProcess], models: dict[str, str], api: str, stream: bool,
                   requests: int, burst: int) -> tuple[list[dict[str, list[float]]], dict[str, int]]:
    conns = {name: Connection(proxy.url) for name, proxy in proxies.items()}
    raws = {name: raw_request(proxy.url, models[name], stream, api) for name, proxy in proxies.items()}
    errors = dict.fromkeys(proxies, 0)
    for name in proxies:   # warm-up, not recorded
        for _ in range(100):
            await conns[name].request(raws[name])
    rng = random.Random(1)
    cycles = []
    for _ in range(max(1, requests // burst)):
        order = list(proxies)
        rng.shuffle(order)
        got: dict[str, list[float]] = {}
        for name in order:
            got[name] = []
            for _ in range(burst):
                status, ms = await conns[name].request(raws[name])
                errors[name] += status != 200
                got[name].append(ms)
        cycles.append(got)
    for conn in conns.values():
        with contextlib.suppress(Exception):
            await conn.close()
    return cycles, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default=installed_litellm(),
                        help="comma list of LiteLLM releases; the first one also runs the variants")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY.PATH=VALUE[,...]",
                        help="one more plugins proxy with these settings, e.g. guard-off:guard.enabled=false")
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME:PATH",
                        help="one more plugins proxy running the litellm_plugins package of the checkout at PATH")
    parser.add_argument("--modes", default="plain,stream")
    parser.add_argument("--apis", default="chat", help="comma list of chat, responses, messages")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per proxy and mode")
    parser.add_argument("--burst", type=int, default=10)
    args = parser.parse_args()
    try:
        for v in args.variant:
            parse_variant(v)
        for c in args.checkout:
            if ":" not in c or not Path(c.split(":", 1)[1], "litellm_plugins").is_dir():
                raise ValueError(f"--checkout wants NAME:PATH of a checkout with litellm_plugins/, got {c!r}")
        if set(args.apis.split(",")) - set(API_PATHS):
            raise ValueError(f"--apis: choose from {', '.join(API_PATHS)}")
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
