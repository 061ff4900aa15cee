"""What routing asks the health capability, answered from memory (no I/O on the request path).

Contract used by routing: ``unhealthy_model_ids()`` returns the LiteLLM deployment ids
(``model_info.id``) that must not receive traffic now (circuit open or forced down). It is a plain
function returning a frozenset, refreshed in the background by the health capability; with health
disabled or not started it returns an empty set.

``circuit_open_model_ids()`` / ``forced_down_model_ids()`` split that set for the health hook's own
``async_filter_deployments``: an open circuit is ignored when it would leave a model group with no
deployment (never black-hole a request on a guess), an operator's "force down" is not.
"""

from __future__ import annotations

_unhealthy: frozenset[str] = frozenset()
_open: frozenset[str] = frozenset()
_forced_down: frozenset[str] = frozenset()


def unhealthy_model_ids() -> frozenset[str]:
    return _unhealthy


def circuit_open_model_ids() -> frozenset[str]:
    return _open


def forced_down_model_ids() -> frozenset[str]:
    return _forced_down


def publish(model_ids: frozenset[str], forced_down: frozenset[str] = frozenset()) -> None:
    """Called by the health capability's refresher only. ``model_ids``: open circuits (plus, for
    callers of the one-argument form, anything else to avoid); ``forced_down``: operator overrides."""
    global _unhealthy, _open, _forced_down
    _open = frozenset(model_ids) - forced_down
    _forced_down = frozenset(forced_down)
    _unhealthy = _open | _forced_down
