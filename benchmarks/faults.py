"""The fault suite, short or long form, printed as the table in BENCHMARKS.md "## Fault suite".

    python benchmarks/faults.py            # short form (what CI runs, ~4.5 min; 5 random kill -9s)
    python benchmarks/faults.py --long     # longer load and outages, 20 random kill -9s (~17 min)

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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "faults.json"
        env = {**os.environ, "FAULTS_PROFILE": "long" if args.long else "short",
               "FAULTS_REPORT": str(report_path)}
        cmd = ["bash", str(ROOT / "scripts" / "test"), "tests/test_faults.py", "-q", "-p", "no:cacheprovider"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=1800)
        if report_path.exists():
            print(table(json.loads(report_path.read_text())))
        else:
            print("no report written (a scenario failed before the end; see the pytest output)", file=sys.stderr)
        return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
