"""Microbenchmark of the metrics instrumentation: microseconds one request adds by counting.

A served, held, routed request makes these calls (``litellm_plugins.metrics.record``): one hold
decision with its latency, the hold record queued, the settle record queued, the request outcome,
and (health's success path) nothing. This replays exactly that sequence in process, in the mode
asked for, and reports the median of ``--rounds`` rounds of ``--n`` requests each:

    python benchmarks/micro_metrics.py [--n 20000] [--rounds 7]

Runs twice, in subprocesses: single-process mode (the worker's own registry) and multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set: every sample lives in a memory-mapped file, what several workers
use), plus the same sequence with metrics off (``record`` not installed: one global read per call).
No network, no proxy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_round(n: int) -> float:
    from litellm_plugins.metrics import record

    hold_rec = {"op": "hold", "id": "h", "account": "user:a", "amount": 1234, "ts": 0.0}
    settle_rec = {"op": "settle", "id": "h", "account": "user:a", "amount": 1234, "charge": 321, "ts": 0.0}
    started = time.perf_counter()
    for _ in range(n):
        record.hold("placed", 0.0004)
        record.queued(hold_rec)
        record.queued(settle_rec)
        record.request("eco", "enterprise", "deepinfra-llama-3.1-8b", "success")
    return (time.perf_counter() - started) / n * 1e6


def child(mode: str, n: int, rounds: int) -> dict[str, float]:
    from litellm_plugins.metrics import record

    if mode != "off":
        from prometheus_client import CollectorRegistry

        from litellm_plugins.metrics.instruments import Instruments

        record.install(Instruments(registry=CollectorRegistry()))
    one_round(min(n, 2000))  # warm: children created, files mapped
    record.publish()
    results = [one_round(n) for _ in range(rounds)]
    return {"median_us": statistics.median(results), "min_us": min(results), "max_us": max(results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", choices=["off", "single", "multiprocess"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.rounds)))
        return 0
    rows = {}
    for mode in ("off", "single", "multiprocess"):
        env = {k: v for k, v in os.environ.items() if k.lower() != "prometheus_multiproc_dir"}
        with tempfile.TemporaryDirectory() as tmp:
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = tmp
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--n", str(args.n),
                                  "--rounds", str(args.rounds)], env=env, capture_output=True, text=True,
                                 check=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    print(f"metrics instrumentation per request (4 calls: hold, hold queued, settle queued, outcome), "
          f"{args.rounds} rounds x {args.n} requests")
    print(f"{'mode':<14}{'median µs':>12}{'min µs':>10}{'max µs':>10}")
    for mode, r in rows.items():
        print(f"{mode:<14}{r['median_us']:>12.2f}{r['min_us']:>10.2f}{r['max_us']:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
