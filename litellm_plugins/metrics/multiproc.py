"""Single- or multi-process exposition: which registry a scrape renders, and where the samples live.

prometheus_client picks its value class when it is first imported: with ``PROMETHEUS_MULTIPROC_DIR``
set, every worker writes its samples into memory-mapped files in that directory and a scrape (any
worker) adds them up (``MultiProcessCollector``). LiteLLM (1.102.4 and 1.108.7, ``proxy_cli.py``)
sets that variable itself when ``--num_workers`` > 1 and ``prometheus`` is listed as a callback, and
wipes the directory at boot; its ``/metrics`` then renders the directory — our metrics included,
since they are written to the same files.

Without the ``prometheus`` callback LiteLLM sets nothing, and each worker would count alone. Then,
when this worker is one of several (a uvicorn worker is a ``multiprocessing`` child of the
supervisor), ``setup`` points the variable at a directory of its own for this supervisor —
``<tmp>/litellm-plugins-metrics-<supervisor pid>-<its start time>``, fresh for every proxy start,
shared by all its workers — before ``prometheus_client`` is imported. Directories of supervisors
that are gone are removed. An operator may always set ``PROMETHEUS_MULTIPROC_DIR`` themselves
(gunicorn, or a directory they wipe); it is used as it is.
"""

from __future__ import annotations

import glob
import logging
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("litellm_plugins.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
OWN_PREFIX = "litellm-plugins-metrics-"
_LIVE_GAUGE = re.compile(r"gauge_live[a-z]*_(\d+)\.db$")


def configured_dir() -> str | None:
    return os.environ.get(ENV) or os.environ.get(ENV.lower())


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(base: str) -> None:
    for path in glob.glob(os.path.join(base, OWN_PREFIX + "*")):
        match = re.match(rf"{OWN_PREFIX}(\d+)-(\d+)$", os.path.basename(path))
        if match is None:
            continue
        pid, started = int(match.group(1)), match.group(2)
        if not _alive(pid) or _start_time(pid) != started:
            shutil.rmtree(path, ignore_errors=True)


def setup() -> str | None:
    """Choose the mode for this worker; returns the multiprocess directory, or None (single process)."""
    existing = configured_dir()
    if existing:
        os.makedirs(existing, exist_ok=True)
        os.environ[ENV] = existing
        return existing
    if multiprocessing.parent_process() is None:
        return None  # one worker: the process's own registry is the whole truth
    if "prometheus_client" in sys.modules:
        log.warning("metrics: several workers but prometheus_client was imported before litellm-plugins "
                    "started; each scrape shows one worker's counts. Set %s to an empty directory.", ENV)
        return None
    supervisor = os.getppid()
    base = tempfile.gettempdir()
    _remove_stale(base)
    directory = os.path.join(base, f"{OWN_PREFIX}{supervisor}-{_start_time(supervisor)}")
    os.makedirs(directory, exist_ok=True)
    os.environ[ENV] = directory
    return directory


def forget_dead_workers(directory: str) -> None:
    """Drop the live-gauge files of workers that no longer run (uvicorn restarts a crashed worker and
    has no exit hook): their in-flight gauges would otherwise stay in the sum. Counters stay: what a
    dead worker counted did happen."""
    from prometheus_client import multiprocess

    pids = {int(m.group(1)) for f in glob.glob(os.path.join(directory, "gauge_live*_*.db"))
            if (m := _LIVE_GAUGE.search(f)) is not None}
    for pid in pids:
        if pid != os.getpid() and not _alive(pid):
            multiprocess.mark_process_dead(pid, directory)


def registry():
    """The registry a scrape renders: every worker's files in multiprocess mode, else this process's."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    directory = configured_dir()
    if directory:
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg, path=directory)
        return reg
    return REGISTRY


def prometheus_callback_listed(config: dict) -> bool:
    """The same test as LiteLLM's ``_prometheus_callback_configured``: ``prometheus`` in
    ``callbacks``, ``success_callback`` or ``failure_callback`` makes LiteLLM mount ``/metrics``."""
    settings = config.get("litellm_settings") or {}
    for key in ("callbacks", "success_callback", "failure_callback"):
        value = settings.get(key)
        if value == "prometheus" or (isinstance(value, list) and "prometheus" in value):
            return True
    return False
