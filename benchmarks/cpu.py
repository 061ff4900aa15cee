"""CPU seconds used so far by the processes on this machine, grouped, from /proc.

The plugins' work in Postgres and Redis runs in other processes that share the machine's two
cores with the proxy, so a benchmark that only counts the proxy's own CPU misses it.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
GROUPS = ("proxy", "postgres", "redis", "other", "machine")


def process_tree(pid: int) -> set[int]:
    """A process and all its live descendants."""
    tree: set[int] = set()
    pending = [pid]
    while pending:
        p = pending.pop()
        tree.add(p)
        try:
            pending.extend(map(int, Path(f"/proc/{p}/task/{p}/children").read_text().split()))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return tree


def cpu_by_group(proxy_pid: int | None = None) -> dict[str, float]:
    """utime+stime per group: the proxy's process tree (``proxy_pid``), Postgres, Redis, everything
    else; and ``machine``, every core's busy time from /proc/stat. Processes that exit between two
    readings are lost: compare deltas over a window in which none does."""
    proxy_tree = process_tree(proxy_pid) if proxy_pid is not None else set()
    groups = dict.fromkeys(GROUPS, 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, _, rest = (entry / "stat").read_text().rpartition(")")
        except (FileNotFoundError, ProcessLookupError):
            continue
        comm = head.partition("(")[2]
        fields = rest.split()
        seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK
        group = ("proxy" if int(entry.name) in proxy_tree else "postgres" if comm.startswith("postgres")
                 else "redis" if comm.startswith("redis") else "other")
        groups[group] += seconds
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    groups["machine"] = (sum(map(int, cpu)) - int(cpu[3]) - int(cpu[4])) / CLK_TCK  # minus idle, iowait
    return groups
