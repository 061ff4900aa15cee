"""Every metric of litellm-plugins (prefix ``litellm_plugins_``), with its labels; docs/metrics.md.

Imported only by ``hook.start`` (after ``multiproc.setup`` chose the value class): importing
``prometheus_client`` fixes single- vs multi-process mode for the whole worker.

Money counters count credit **units** (1 credit = 1,000,000 units, ``credits/money.py``), integers:
Prometheus keeps float64, exact for integers up to 2**53 units (about 9 billion credits) per series.
Gauges carry a ``multiprocess_mode`` so that with several workers (``PROMETHEUS_MULTIPROC_DIR``) the
scrape shows the right aggregate: ``livesum`` for per-worker quantities, ``livemax`` for values every
worker reads from the same Redis / directory (the circuit states, the journal, the spool).
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

OTHER = "_other"

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Family:
    """A labelled metric with its children cached (``labels()`` costs a lock and a tuple build) and a
    cap on distinct label sets: past ``cap`` every new set is counted under ``_other``."""

    __slots__ = ("metric", "cap", "children", "_overflow", "_lock")

    def __init__(self, metric: Any, cap: int) -> None:
        self.metric = metric
        self.cap = cap
        self.children: dict[tuple[str, ...], Any] = {}
        self._overflow: Any = None
        self._lock = threading.Lock()

    def get(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is not None:
            return child
        with self._lock:
            child = self.children.get(values)
            if child is not None:
                return child
            if len(self.children) >= self.cap:
                if self._overflow is None:
                    self._overflow = self.metric.labels(*([OTHER] * len(values)))
                return self._overflow
            child = self.metric.labels(*values)
            self.children[values] = child
            return child

    def remove(self, *values: str) -> None:
        with self._lock:
            if self.children.pop(values, None) is not None:
                try:
                    self.metric.remove(*values)
                except KeyError:
                    pass


# name -> (kind, help, labels); the static test of docs/grafana + docs/prometheus reads this table.
SPEC: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # ---- requests ------------------------------------------------------------------------------
    "requests": ("counter", "LLM requests that ended, by power level, tier, model group that served "
                            "(or was chosen, when none did) and outcome (success / refused / error)",
                 ("power_level", "tier", "model_group", "outcome")),
    "fallbacks": ("counter", "Successful requests served by a fallback model group instead of the first choice",
                  ("power_level", "model_group")),
    "refusals": ("counter", "Requests refused or failed with an HTTP status, by status and error type",
                 ("status", "type")),
    # ---- credits -------------------------------------------------------------------------------
    "credits_holds": ("counter", "Hold decisions of the credits pre-call hook "
                                 "(placed / leased / refused / byok / unheld / unavailable)", ("result",)),
    "credits_hold_seconds": ("histogram", "Time to place an exact hold in Redis (one script call)", ()),
    "credits_held_units": ("gauge_livesum", "Credit units held right now by in-flight requests "
                                            "(1 credit = 1,000,000 units)", ()),
    "credits_charged_units": ("counter", "Credit units charged (settled holds)", ()),
    "credits_voided_units": ("counter", "Credit units of holds voided because their request failed or ended "
                                        "without a result", ()),
    "credits_granted_units": ("counter", "Credit units granted through POST /plugins/credits/grant", ()),
    "credits_reconciler_voided_holds": ("counter", "Holds the reconciler closed: expired past hold_ttl_seconds, "
                                                   "or released from Redis after Postgres closed them", ("reason",)),
    "credits_leases": ("counter", "Per-worker credit leases granted / given back / lost", ("event",)),
    # ---- usage writer ----------------------------------------------------------------------------
    "writer_queue_records": ("gauge_livesum", "Records queued in memory for the next Postgres flush", ()),
    "writer_flush_seconds": ("histogram", "Duration of one writer flush (Postgres, or the spool when it is down)",
                             ()),
    "writer_records": ("counter", "Records the writer wrote, by where to (flushed / spooled / replayed / "
                                  "recovered)", ("result",)),
    "writer_spool_bytes": ("gauge_livemax", "Bytes in the disk spool (writes waiting for Postgres)", ()),
    "writer_journal_records": ("gauge_livemax", "Entries in the shared Redis journal (records between "
                                                "callback and flush, or left by a dead worker)", ()),
    "writer_oldest_unflushed_seconds": ("gauge_livemax", "Age of the oldest record not yet in Postgres "
                                                         "(in memory or spooled by this worker)", ()),
    "writer_postgres_down": ("gauge_livemax", "1 while the writer spools because Postgres is unreachable", ()),
    # ---- byok ----------------------------------------------------------------------------------
    "byok_injections": ("counter", "Attempts sent with the caller's own provider key", ("provider",)),
    "byok_user_key_failures": ("counter", "Failed attempts made with the caller's own key", ("provider",)),
    # ---- health --------------------------------------------------------------------------------
    "health_circuit_state": ("gauge_livemax", "Circuit per deployment: 0 closed (or forced up), 1 half-open, "
                                              "2 open, 3 forced down by an operator",
                             ("deployment", "model_group", "provider")),
    "health_probe_seconds": ("histogram", "Active probe latency", ("provider",)),
    "health_probe_failures": ("counter", "Failed active probes", ("provider", "model_group")),
    # ---- routing -------------------------------------------------------------------------------
    "routing_degraded": ("counter", "Requests moved to a cheaper level because the credits could not cover "
                                    "the asked one", ("from_level", "to_level")),
    "routing_escalated": ("counter", "Requests moved to a pricier level because the asked one could not serve",
                          ("from_level", "to_level")),
    # ---- guard ---------------------------------------------------------------------------------
    "guard_refusals": ("counter", "Malformed requests refused by the guard (400) or bodies too large (413)",
                       ("status",)),
    # ---- opt-in per account (litellm_plugins.metrics.per_account_labels) -------------------------
    "account_requests": ("counter", "Requests per account (opt-in, capped by max_accounts)", ("account", "outcome")),
    "account_credits_charged_units": ("counter", "Credit units charged per account (opt-in)", ("account",)),
}
PREFIX = "litellm_plugins_"
OPT_IN = frozenset({"account_requests", "account_credits_charged_units"})


def exposed_names() -> set[str]:
    """Every sample name a scrape can show (counters end in ``_total``; histograms add their series)."""
    names: set[str] = set()
    for short, (kind, _, _) in SPEC.items():
        full = PREFIX + short
        if kind == "counter":
            names |= {full + "_total", full + "_created"}
        elif kind == "histogram":
            names |= {full + "_bucket", full + "_sum", full + "_count", full + "_created"}
        else:
            names.add(full)
    return names


class Instruments:
    """The metric objects of one worker, registered in ``registry`` (the process default unless a test
    or benchmark passes its own)."""

    def __init__(self, cap: int = 500, registry: CollectorRegistry | None = REGISTRY,
                 per_account: bool = False, max_accounts: int = 100) -> None:
        self.cap = cap
        self.registry = registry
        self.metrics: dict[str, Any] = {}
        for short, (kind, doc, labels) in SPEC.items():
            if short in OPT_IN and not per_account:
                continue
            name = PREFIX + short
            if kind == "counter":
                metric = Counter(name, doc, labels, registry=registry)
            elif kind == "histogram":
                buckets = {"credits_hold_seconds": LATENCY_BUCKETS, "writer_flush_seconds": FLUSH_BUCKETS,
                           "health_probe_seconds": PROBE_BUCKETS}[short]
                metric = Histogram(name, doc, labels, registry=registry, buckets=buckets)
            else:
                mode = kind.split("_", 1)[1]
                metric = Gauge(name, doc, labels, registry=registry, multiprocess_mode=mode)
            self.metrics[short] = metric
        m = self.metrics
        self.requests = Family(m["requests"], cap)
        self.fallbacks = Family(m["fallbacks"], cap)
        self.refusals = Family(m["refusals"], cap)
        self.holds = Family(m["credits_holds"], 16)
        self.hold_seconds = m["credits_hold_seconds"]
        self.held = m["credits_held_units"]
        self.charged = m["credits_charged_units"]
        self.voided = m["credits_voided_units"]
        self.granted = m["credits_granted_units"]
        self.reconciled = Family(m["credits_reconciler_voided_holds"], 8)
        self.leases = Family(m["credits_leases"], 8)
        self.queue = m["writer_queue_records"]
        self.flush_seconds = m["writer_flush_seconds"]
        self.written = Family(m["writer_records"], 8)
        self.spool_bytes = m["writer_spool_bytes"]
        self.journal = m["writer_journal_records"]
        self.oldest = m["writer_oldest_unflushed_seconds"]
        self.pg_down = m["writer_postgres_down"]
        self.byok = Family(m["byok_injections"], cap)
        self.byok_failures = Family(m["byok_user_key_failures"], cap)
        self.circuit = Family(m["health_circuit_state"], cap)
        self.probe_seconds = Family(m["health_probe_seconds"], cap)
        self.probe_failures = Family(m["health_probe_failures"], cap)
        self.degraded = Family(m["routing_degraded"], cap)
        self.escalated = Family(m["routing_escalated"], cap)
        self.guard = Family(m["guard_refusals"], 8)
        self.per_account = per_account
        if per_account:
            self.account_requests = Family(m["account_requests"], max_accounts * 3)
            self.account_charged = Family(m["account_credits_charged_units"], max_accounts)
            self.max_accounts = max_accounts
            self.accounts: set[str] = set()
        # Series that exist from the start, at 0, so rate() and alerts see them before the first event.
        for result in ("placed", "leased", "refused", "byok", "unheld", "unavailable"):
            self.holds.get(result)
        for result in ("flushed", "spooled", "replayed", "recovered"):
            self.written.get(result)
        for event in ("granted", "returned", "lost"):
            self.leases.get(event)
        for reason in ("expired", "released"):
            self.reconciled.get(reason)
        for status in ("400", "413"):
            self.guard.get(status)

    def account(self, account: str) -> str:
        """The account's own label while fewer than ``max_accounts`` were seen by this worker."""
        if account in self.accounts:
            return account
        if len(self.accounts) < self.max_accounts:
            self.accounts.add(account)
            return account
        return OTHER

    def unregister(self, registry: CollectorRegistry = REGISTRY) -> None:
        for metric in self.metrics.values():
            try:
                registry.unregister(metric)
            except KeyError:
                pass
