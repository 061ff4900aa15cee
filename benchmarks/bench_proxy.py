"""Bare LiteLLM proxy vs the proxy with our plugins: same fake provider, same machine, one run, interleaved.

    python benchmarks/bench_proxy.py --plugins all --clients 1,16 --modes plain,stream --rounds 3

Starts a throwaway Postgres database, a private Redis key prefix, the fake OpenAI-compatible provider
(its own process) and two real ``litellm`` proxies from the project's config (bare: no startup hook,
no callbacks; plugins: the capabilities chosen with ``--plugins``). Both use the same custom_auth and
user key, so auth costs the same. Load comes from ``wrk`` (``apt-get install wrk``); each round runs
every (clients, mode) cell on both proxies, alternating which goes first. Reports the median over
rounds of p50/p99 latency and requests/s, and the ratios, plus the *paired* added p50 (median of the
per-round differences, with a bootstrap 95% interval: use many short rounds for sub-ms questions);
``--json`` writes the raw numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import yaml  # noqa: E402

from tests.support.fake_provider import free_port  # noqa: E402
from tests.support.proxy import KeyFile, ProxyProcess, deep_merge, test_config  # noqa: E402
from tests.support.services import REDIS_URL, redis_prefix, throwaway_database  # noqa: E402

CAPABILITIES = ("guard", "routing", "byok", "credits", "health", "metrics")
BENCH_KEY = "sk-bench-user-0001"
LUA = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def parse_wrk(output: str) -> dict[str, float]:
    def ms(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
        return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    dist = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {"p50_ms": ms(dist["50"]), "p99_ms": ms(dist["99"]), "rps": rps, "requests": total,
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def run_wrk(url: str, body: dict, clients: int, duration: int, workdir: Path) -> dict[str, float]:
    script = workdir / f"wrk_{abs(hash(json.dumps(body, sort_keys=True)))}.lua"
    script.write_text(LUA % (json.dumps(body), BENCH_KEY))
    cmd = ["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{int(duration)}s", "--latency",
           "--timeout", "30s", "-s", str(script), url + "/v1/chat/completions"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    try:
        return parse_wrk(out)
    except (KeyError, AttributeError):
        raise RuntimeError(f"unreadable wrk output:\n{out}") from None


def chosen_of(spec: str) -> set[str]:
    """``--plugins``: ``all``, ``none`` (every hook registered, every capability off) or a comma list."""
    if spec == "all":
        return set(CAPABILITIES)
    chosen = set() if spec == "none" else set(filter(None, spec.split(",")))
    unknown = chosen - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capability: {', '.join(sorted(unknown))}")
    return chosen


def overrides_of(pairs: list[str]) -> dict:
    """``--set credits.lease_requests=0`` (repeatable) -> ``{"credits": {"lease_requests": 0}}``:
    settings of the plugins proxy on top of proxy_config.yaml (values are read as YAML)."""
    out: dict = {}
    for pair in pairs:
        path, sep, value = pair.partition("=")
        if not sep or not path:
            raise ValueError(f"--set wants KEY.PATH=VALUE, got {pair!r}")
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def plugin_settings(chosen: set[str]) -> dict:
    settings: dict = {cap: {"enabled": cap in chosen} for cap in CAPABILITIES}
    if "health" in chosen:
        # probes would add upstream traffic the bare proxy does not get
        settings["health"]["probe_interval_s"] = 3600
    return settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", default="all", help="comma list of capabilities, or 'all'")
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--modes", default="plain,stream")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--model", default="auto",
                        help="model for the plugins proxy ('auto' = the group routing picks for eco)")
    parser.add_argument("--json", type=Path, help="write raw results here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="a setting of the plugins proxy, e.g. credits.lease_requests=0 (repeatable)")
    parser.add_argument("--base-plugins", help="baseline = a plugins proxy with these capabilities instead of "
                                               "the bare proxy, e.g. all but metrics: guard,routing,byok,credits,health")
    args = parser.parse_args()
    try:
        args.overrides = overrides_of(args.set)
        args.base = chosen_of(args.base_plugins) if args.base_plugins else None
    except ValueError as exc:
        parser.error(str(exc))
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    try:
        chosen = chosen_of(args.plugins)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(bench(args, chosen))


def proxy_env(workdir: Path, dsn: str, byok: bool) -> dict[str, str]:
    """Environment of a benchmarked proxy: its database, Redis, and the key file holding BENCH_KEY
    (tier enterprise; read by tests.support.custom_auth), plus a fresh BYOK key when BYOK is on."""
    keys = KeyFile(workdir / "keys.json")
    keys.add(BENCH_KEY, user_id="bench-user", team_id="bench-team", metadata={"tier": "enterprise"})
    env = {"LITELLM_PLUGINS_DATABASE_URL": dsn, "LITELLM_PLUGINS_REDIS_URL": REDIS_URL,
           "LITELLM_PLUGINS_TEST_KEYS": str(keys.path)}
    if byok:
        from cryptography.fernet import Fernet
        env["LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    return env


@contextlib.asynccontextmanager
async def two_proxies(chosen: set[str], workers: int, model: str = "auto", overrides: dict | None = None,
                      base: set[str] | None = None
                      ) -> AsyncIterator[tuple[dict[str, tuple[ProxyProcess, str]], str, Path]]:
    """The fake provider, a throwaway database and Redis prefix, and the two proxies under test.

    ``base`` (``--base-plugins``): the baseline is not the bare proxy but a plugins proxy with these
    capabilities (e.g. everything but ``metrics``, to price one capability in the same run); it is
    still reported as "bare".

    Yields ``({"bare": (proxy, model), "plugins": (proxy, model)}, served group, workdir)``: the
    plugins proxy is asked for ``model`` (``auto``: ``eco`` when routing is on), the bare proxy for
    the group the plugins proxy served it from, so both call the same deployment.
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench_"))
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.support.fake_provider", "--port", str(fake_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies: list[ProxyProcess] = []
    try:
        async with throwaway_database("lp_bench") as dsn, redis_prefix() as prefix:
            fake_url = f"http://127.0.0.1:{fake_port}/v1"
            env = proxy_env(workdir, dsn, byok="byok" in chosen or "byok" in (base or ()))
            if base is None:
                bare_cfg = test_config(fake_url, {"litellm_plugins": {"redis_key_prefix": prefix,
                                                                      **plugin_settings(set())}})
                bare_cfg["litellm_settings"]["callbacks"] = []
            else:
                bare_cfg = test_config(fake_url, {"litellm_plugins": {"redis_key_prefix": prefix,
                                                                      **deep_merge(plugin_settings(base),
                                                                                   overrides or {})}})
            plug_cfg = test_config(fake_url, {"litellm_plugins": {"redis_key_prefix": prefix,
                                                                  **deep_merge(plugin_settings(chosen),
                                                                           overrides or {})}})
            bare = ProxyProcess(bare_cfg, workdir, env, name="bare", num_workers=workers, plugins=base is not None)
            plug = ProxyProcess(plug_cfg, workdir, env, name="plugins", num_workers=workers)
            for proxy in (bare, plug):  # registered before start: a failed start is still cleaned up
                proxies.append(proxy)
                proxy.start()

            if model == "auto":
                model = "eco" if "routing" in chosen else "gpt-4o-mini"
            probe = httpx.post(plug.url + "/v1/chat/completions", timeout=30,
                               headers={"Authorization": f"Bearer {BENCH_KEY}"},
                               json={"model": model, "messages": [{"role": "user", "content": "warm"}]})
            probe.raise_for_status()
            served = probe.headers.get("x-litellm-plugins-model-group", model)
            print(f"plugins proxy: model={model!r} served by group {served!r}; bare proxy: model={served!r}",
                  flush=True)
            bare_model = model if base is not None and "routing" in base else served
            yield {"bare": (bare, bare_model), "plugins": (plug, model)}, served, workdir
    finally:
        for proxy in proxies:
            proxy.stop()
        fake.terminate()
        fake.wait(timeout=10)


async def bench(args: argparse.Namespace, chosen: set[str]) -> int:
    async with two_proxies(chosen, args.workers, args.model, args.overrides,
                           args.base) as (variants, served, workdir):
        cells = [(c, m) for c in map(int, args.clients.split(",")) for m in args.modes.split(",")]
        results: dict[str, dict[str, list[dict[str, float]]]] = {"bare": {}, "plugins": {}}
        for name, (proxy, m) in variants.items():  # warm-up, not recorded
            run_wrk(proxy.url, {"model": m, "messages": [{"role": "user", "content": "warm up"}]},
                    4, 3, workdir)
        for round_no in range(args.rounds):
            order = ["bare", "plugins"] if round_no % 2 == 0 else ["plugins", "bare"]
            for clients, mode in cells:
                for name in order:
                    proxy, m = variants[name]
                    body = {"model": m, "messages": [{"role": "user", "content": "Say something short."}],
                            "max_tokens": 16}
                    if mode == "stream":
                        body["stream"] = True
                    r = run_wrk(proxy.url, body, clients, args.duration, workdir)
                    results[name].setdefault(f"{clients}:{mode}", []).append(r)
                    print(f"round {round_no + 1} {name:8s} c={clients:<3d} {mode:6s} "
                          f"p50={r['p50_ms']:.2f}ms p99={r['p99_ms']:.2f}ms rps={r['rps']:.1f} "
                          f"non2xx={r['non_2xx']} sockerr={r['socket_errors']}", flush=True)
        report(results, args, chosen, served)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                             "plugins": sorted(chosen), "results": results}, indent=2))
        failed = any(r["non_2xx"] or r["socket_errors"] for v in results.values() for rs in v.values()
                     for r in rs)
        return 1 if failed else 0


def paired_added(bare_rows: list[dict], plug_rows: list[dict], key: str = "p50_ms",
                 ratio: bool = False) -> tuple[float, float, float]:
    """Median of the per-round differences (plugins - bare, same round, back to back; or ratios
    plugins / bare) and a 95% bootstrap interval of it. On a shared 2-core machine the bare proxy's
    own p50 drifts by several ms between rounds; a comparison within each round cancels most of it."""
    diffs = [p[key] / b[key] if ratio else p[key] - b[key] for b, p in zip(bare_rows, plug_rows, strict=True)]
    rng = random.Random(0)
    boots = sorted(statistics.median(rng.choices(diffs, k=len(diffs))) for _ in range(2000))
    return statistics.median(diffs), boots[49], boots[1949]


def report(results: dict, args: argparse.Namespace, chosen: set[str], served: str) -> None:
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    print(f"\n### plugins={','.join(sorted(chosen)) or 'none'} workers={args.workers} rounds={args.rounds} "
          f"duration={args.duration}s model group={served}\n")
    print("| clients | mode | bare p50 ms | plugins p50 ms | added p50 ms | paired added p50 ms [95% CI] "
          "| bare p99 ms | plugins p99 ms | bare req/s | plugins req/s | throughput ratio | paired throughput ratio [95% CI] |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cell, bare_rows in results["bare"].items():
        plug_rows = results["plugins"][cell]
        clients, mode = cell.split(":")
        b50, p50 = med(bare_rows, "p50_ms"), med(plug_rows, "p50_ms")
        b99, p99 = med(bare_rows, "p99_ms"), med(plug_rows, "p99_ms")
        brps, prps = med(bare_rows, "rps"), med(plug_rows, "rps")
        d, lo, hi = paired_added(bare_rows, plug_rows)
        r, rlo, rhi = paired_added(bare_rows, plug_rows, "rps", ratio=True)
        print(f"| {clients} | {mode} | {b50:.2f} | {p50:.2f} | {p50 - b50:+.2f} | {d:+.2f} [{lo:+.2f}, {hi:+.2f}] "
              f"| {b99:.2f} | {p99:.2f} | {brps:.1f} | {prps:.1f} | {prps / brps:.3f} | {r:.3f} [{rlo:.3f}, {rhi:.3f}] |")


if __name__ == "__main__":
    raise SystemExit(main())
