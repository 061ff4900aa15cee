"""What the other capabilities call to count: one global read and a return while metrics are off.

Each function is synchronous and costs a few microseconds (a dict lookup of the cached child and
prometheus_client's own lock; in multiprocess mode a write into a memory-mapped file): no I/O, no
await. ``benchmarks/micro_metrics.py`` measures them. Nothing here imports ``prometheus_client``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litellm_plugins.metrics.instruments import Instruments

_i: Instruments | None = None

CIRCUIT_VALUES = {"closed": 0, "forced_up": 0, "half_open": 1, "open": 2, "forced_down": 3}


def install(instruments: Instruments | None) -> None:
    global _i
    _i = instruments


def active() -> Instruments | None:
    return _i


def _s(value: Any) -> str:
    if value.__class__ is str and 0 < len(value) <= 120:  # the common case: a name from the config
        return value
    return "none" if value is None or value == "" else str(value)[:120]


# ---- requests (metrics hook) ---------------------------------------------------------------------
def request(power_level: Any, tier: Any, model_group: Any, outcome: str, account: str | None = None) -> None:
    i = _i
    if i is None:
        return
    i.requests.get(_s(power_level), _s(tier), _s(model_group), outcome).inc()
    if i.per_account and account:
        i.account_requests.get(i.account(account), outcome).inc()


def fallback(power_level: Any, model_group: Any) -> None:
    i = _i
    if i is not None:
        i.fallbacks.get(_s(power_level), _s(model_group)).inc()


def refusal(status: Any, error_type: Any) -> None:
    i = _i
    if i is not None:
        i.refusals.get(_s(status), _s(error_type)[:60]).inc()


# ---- credits -------------------------------------------------------------------------------------
def hold(result: str, seconds: float | None = None) -> None:
    i = _i
    if i is None:
        return
    i.holds.get(result).inc()
    if seconds is not None:
        i.hold_seconds.observe(seconds)


class _Money:
    """Credit units this worker moved since the last publish: plain ints on the request path (exact,
    no prometheus_client call), handed to the counters and the held gauge by ``publish`` (the
    sampler, every ``sample_interval_seconds``, and before this worker renders a scrape)."""

    __slots__ = ("held", "charged", "voided", "accounts")

    def __init__(self) -> None:
        self.held = 0
        self.charged = 0
        self.voided = 0
        self.accounts: dict[str, int] = {}


_money = _Money()


def queued(record: dict[str, Any]) -> None:
    """A record entering the writer's queue (``Writer.put``): the one place every hold, settle and void
    of this worker passes exactly once."""
    if _i is None:
        return
    op = record["op"]
    m = _money
    if op == "hold":
        m.held += int(record["amount"])
    elif op == "settle":
        charge = int(record.get("charge") or 0)
        m.held -= int(record.get("amount") or 0)
        if charge:
            m.charged += charge
            if _i.per_account and record.get("account"):
                account = str(record["account"])
                m.accounts[account] = m.accounts.get(account, 0) + charge
    elif op == "void":
        amount = int(record.get("amount") or 0)
        m.held -= amount
        m.voided += amount


def publish() -> None:
    """Move what ``queued`` counted into the metrics (cheap; the event loop's thread only)."""
    i = _i
    if i is None:
        return
    m = _money
    i.held.set(m.held)
    charged, voided, accounts = m.charged, m.voided, m.accounts
    m.charged = m.voided = 0
    m.accounts = {}
    if charged:
        i.charged.inc(charged)
    if voided:
        i.voided.inc(voided)
    for account, units in accounts.items():
        i.account_charged.get(i.account(account)).inc(units)


def granted(units: int) -> None:
    i = _i
    if i is not None and units > 0:
        i.granted.inc(units)


def reconciled(reason: str, count: int) -> None:
    i = _i
    if i is not None and count:
        i.reconciled.get(reason).inc(count)


def lease(event: str) -> None:
    i = _i
    if i is not None:
        i.leases.get(event).inc()


def written(result: str, count: int) -> None:
    i = _i
    if i is not None and count:
        i.written.get(result).inc(count)


def flushed(seconds: float) -> None:
    i = _i
    if i is not None:
        i.flush_seconds.observe(seconds)


# ---- byok ------------------------------------------------------------------------------------------
def byok_injected(provider: Any) -> None:
    i = _i
    if i is not None:
        i.byok.get(_s(provider)).inc()


def byok_failed(provider: Any) -> None:
    i = _i
    if i is not None:
        i.byok_failures.get(_s(provider)).inc()


# ---- health ----------------------------------------------------------------------------------------
def circuit(deployment: str, model_group: Any, provider: Any, state: str) -> None:
    i = _i
    if i is not None:
        i.circuit.get(_s(deployment), _s(model_group), _s(provider)).set(CIRCUIT_VALUES.get(state, 0))


def probe(provider: Any, model_group: Any, ok: bool, seconds: float | None) -> None:
    i = _i
    if i is None:
        return
    if seconds is not None:
        i.probe_seconds.get(_s(provider)).observe(seconds)
    if not ok:
        i.probe_failures.get(_s(provider), _s(model_group)).inc()


# ---- routing / guard ---------------------------------------------------------------------------------
def degraded(from_level: Any, to_level: Any) -> None:
    i = _i
    if i is not None:
        i.degraded.get(_s(from_level), _s(to_level)).inc()


def escalated(from_level: Any, to_level: Any) -> None:
    i = _i
    if i is not None:
        i.escalated.get(_s(from_level), _s(to_level)).inc()


def guard_refused(status: int) -> None:
    i = _i
    if i is not None:
        i.guard.get(str(status)).inc()
