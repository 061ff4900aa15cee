"""The exporter interface and what every receiver shares: properties of an event, HTTP outcomes.

An exporter gets a batch of events in outbox order and either returns (every event delivered, or
already known to the receiver) or raises :class:`DeliveryError`: ``retryable`` (network, timeout,
5xx, 429, a wrong key or URL...: the same batch is sent again after a backoff) or not (400 / 413 /
422, the receiver refuses the events themselves: they go to the dead-letter list, the cursor moves on).
"""

from __future__ import annotations

from datetime import timezone
from typing import Any

import httpx

from litellm_plugins.billing.settings import ExporterSettings
from litellm_plugins.billing.store import Event
from litellm_plugins.credits.money import fmt

# The receiver refuses these events themselves: dead letters. Any other failure is retried: 401 /
# 403 / 404 mean our key or URL is wrong, which the operator fixes (the lag shows it meanwhile);
# dead-lettering every event until then would only make work.
REFUSED_STATUSES = frozenset({400, 413, 422})


class DeliveryError(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def properties(event: Event) -> dict[str, Any]:
    """What every receiver gets about an event. Money stays exact: decimal strings, never floats."""
    props: dict[str, Any] = {"credits": fmt(event.units), "account": event.account, "kind": event.kind}
    if event.kind == "charge":
        props.update({
            "cost_usd": str(event.cost_usd.normalize()) if event.cost_usd else "0",
            "prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
            "total_tokens": event.prompt_tokens + event.completion_tokens,
            "model_group": event.model_group, "power_level": event.power_level, "byok": event.byok})
    return props


def iso(event: Event) -> str:
    return event.created_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def unix(event: Event) -> int:
    return int(event.created_at.timestamp())


def check_status(response: httpx.Response, what: str) -> None:
    """2xx is delivered; the rest raises. Only the status is reported: a receiver's error body may
    echo what we sent, including its Authorization header."""
    status = response.status_code
    if 200 <= status < 300:
        return
    raise DeliveryError(f"{what}: HTTP {status}", retryable=status not in REFUSED_STATUSES)


class Exporter:
    """One receiver. ``send`` delivers a batch of at most ``settings.batch`` events."""

    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings

    @property
    def name(self) -> str:
        return self.settings.name

    def code(self, event: Event) -> str | None:
        """The receiver's name for this kind of event; None: not exported (grants without grant_code,
        health changes: those are for webhooks)."""
        if event.kind == "charge":
            return self.settings.code
        return self.settings.grant_code if event.kind == "grant" else None

    async def send(self, client: httpx.AsyncClient, events: list[Event]) -> None:
        raise NotImplementedError

    async def post(self, client: httpx.AsyncClient, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await client.post(self.settings.base_url + path, **kwargs)
        except httpx.HTTPError as exc:  # connection refused / reset, timeout, dropped mid-answer
            raise DeliveryError(f"{self.name}: {type(exc).__name__}", retryable=True) from None
