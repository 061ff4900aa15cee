"""Wall-clock time for calendar logic (allowance periods, spend caps), movable in tests.

``now()`` is ``time.time()``. When the environment names a file in ``LITELLM_PLUGINS_CLOCK_FILE``
(tests only: the end-to-end tests cross a month boundary in a second, with real proxies), ``now()``
is ``time.time()`` plus the number of seconds that file holds, re-read when the file changes (one
``stat`` per call, only in that mode). Hold timestamps, TTLs and everything else that measures
elapsed time keep the real clock: only "which day / week / month is it" moves.
"""

from __future__ import annotations

import os
import time

_FILE = os.environ.get("LITELLM_PLUGINS_CLOCK_FILE") or None
_state = {"mtime": -1.0, "offset": 0.0}


def _offset() -> float:
    assert _FILE is not None
    try:
        mtime = os.stat(_FILE).st_mtime
    except OSError:
        return 0.0
    if mtime != _state["mtime"]:
        try:
            with open(_FILE) as f:
                _state["offset"] = float(f.read().strip() or 0)
            _state["mtime"] = mtime
        except (OSError, ValueError):
            pass  # a file being rewritten: keep the last offset
    return _state["offset"]


def now() -> float:
    if _FILE is None:
        return time.time()
    return time.time() + _offset()
