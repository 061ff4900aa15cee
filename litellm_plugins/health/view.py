"""What routing asks the health capability, answered from memory (no I/O on the request path).

Contract used by routing: ``unhealthy_model_ids()`` returns the LiteLLM deployment ids
(``model_info.id``) that must not receive traffic now (circuit open or forced down). It is a plain
function returning a frozenset, refreshed in the background by the health capability; with health
disabled or not started it returns an empty set.
"""

from __future__ import annotations

_unhealthy: frozenset[str] = frozenset()


def unhealthy_model_ids() -> frozenset[str]:
    return _unhealthy


def publish(model_ids: frozenset[str]) -> None:
    """Called by the health capability's refresher only."""
    global _unhealthy
    _unhealthy = model_ids
