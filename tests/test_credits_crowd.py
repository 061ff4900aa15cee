"""A crowd of new accounts is served like everyone else (issue #23 point 3), on a real proxy.

One proxy, one worker, real Postgres and Redis. A burst of accounts that never called arrives open
loop (request i at i / rate, whatever the answers) faster than this machine's proxy serves
(``CROWD_RATE``; the proxy kept up with 10–25 req/s of known accounts while other suites ran
beside it: benchmarks/crowd_credits.py measures it and runs the full-size crowd, BENCHMARKS.md).
Every first request must be served -- no 503 "the credit ledger is unavailable" while Postgres is
up -- and the book must be exact afterwards: each account opened once with exactly one starting
grant, ``credits verify`` clean. Before cold accounts were batched (credits/cold.py) the first
requests queued for pool connections and gave up after 3 s: 133 of these 600 answered 503.
"""

from __future__ import annotations

import pytest

from tests.support.burst import burst, crowd_audit

CROWD = 600
CROWD_RATE = 45.0  # requests/s: above what the proxy keeps up with here, so cold loads queue
STARTING = 1000


@pytest.fixture(scope="module")
def proxy(start_proxy, keys, tmp_path_factory):
    keys.add_users({f"sk-crowd-{i:05d}": f"crowd-{i:05d}" for i in range(CROWD)})
    spool = tmp_path_factory.mktemp("spool")
    return start_proxy(plugins={"routing": {"enabled": False}, "byok": {"enabled": False},
                                "health": {"enabled": False},
                                "credits": {"enabled": True, "starting_grant": STARTING, "spool_dir": str(spool)}})


async def test_a_burst_of_new_accounts_gets_no_503_and_exact_books(proxy, module_database):
    keys = [f"sk-crowd-{i:05d}" for i in range(CROWD)]
    first = await burst(proxy.url, keys, CROWD_RATE)
    statuses = first.statuses()
    assert statuses.get(503, 0) == 0, [s.error for s in first.shots if s.status == 503][:3]
    assert statuses == {200: CROWD}, (statuses, [s.error for s in first.shots if s.status != 200][:3])

    audit = await crowd_audit(module_database, [f"user:crowd-{i:05d}" for i in range(CROWD)], CROWD,
                              STARTING * 1_000_000)
    assert audit == {"settled": CROWD, "opened": CROWD, "grants": CROWD, "odd_grants": 0}
    verify = proxy.credits_verify()
    assert verify.returncode == 0 and f"checked {CROWD} account(s): OK" in verify.stdout, verify.stdout
