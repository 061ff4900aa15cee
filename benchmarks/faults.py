"""The fault suite, short or long form, printed as the table in BENCHMARKS.md "## Fault suite".

    python benchmarks/faults.py            # short form (what CI runs, ~6 min; 5 random kill -9s)
    python benchmarks/faults.py --long     # longer load, Postgres down 10 min, 20 random kill -9s (~30 min)
    python benchmarks/faults.py --long --scenario postgres-long   # Postgres down 10 min only (~12 min)
    python benchmarks/faults.py --scenario redis-twice            # one scenario of the short form

Runs ``tests/test_faults.py`` (two real proxies on a private Postgres + Redis, the fake provider,
bounded paced load; every run stops itself) with ``FAULTS_PROFILE`` set, collects one row per
scenario from ``FAULTS_REPORT`` and prints a Markdown table. Exit status = pytest's.
Needs the dev services (scripts/dev-env.sh) like the test suite; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --scenario: pytest -k for one scenario, with the warm-up (accounts, BYOK key) and the module totals.
SCENARIOS = {"postgres-long": "postgres_down_long", "redis-twice": "redis_restarted_empty_twice"}


def table(report: dict) -> str:
    lines = ["| scenario | load offered | duration | requests | served (200) | errors seen by clients | "
             "rows lost | rows duplicated | balance drift | notes |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in report["rows"]:
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
        lost = str(r["rows_lost"])
        if r.get("rows_lost_kill_window"):
            lost += f" (+{r['rows_lost_kill_window']} in the kill -9 window)"
        lines.append(f"| {r['scenario']} | {r['offered_rps']:.0f} req/s | {r['duration_s']:.0f} s | {r['requests']} | "
                     f"{r['served']} | {errors} | {lost} | {r['rows_duplicated']} | {r['balance_drift_units']} units | "
                     f"{r['notes']} |")
    drift = report.get("account_drift") or {}
    lines.append("")
    lines.append(f"Per-account drift after all scenarios (balance - (start - charges served)): {drift}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="long form: more load, longer outages")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help="run only this scenario")
    parser.add_argument("--pg-down-s", type=float, help="Postgres outage of the postgres-long scenario "
                        "(default: 60 s, 600 s with --long)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "faults.json"
        env = {**os.environ, "FAULTS_PROFILE": "long" if args.long else "short",
               "FAULTS_REPORT": str(report_path)}
        if args.pg_down_s:
            env["FAULTS_PG_DOWN_S"] = str(args.pg_down_s)
        cmd = ["bash", str(ROOT / "scripts" / "test"), "tests/test_faults.py", "-q", "-p", "no:cacheprovider"]
        if args.scenario:
            cmd += ["-k", f"warm_up or {SCENARIOS[args.scenario]} or module_totals"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=3600)
        if report_path.exists():
            print(table(json.loads(report_path.read_text())))
        else:
            print("no report written (a scenario failed before the end; see the pytest output)", file=sys.stderr)
        return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
