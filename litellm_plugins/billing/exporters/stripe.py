"""Stripe meter events: ``POST {url}/v1/billing/meter_events``, one event per request, form-encoded,
``Authorization: Bearer <secret key>``.

``identifier`` is our event id (Stripe enforces its uniqueness over a rolling 24 h at least; a
re-send Stripe already has is answered 400 ``resource_already_exists`` and counts as delivered).
``timestamp`` must be within the past 35 days: older events are dead-lettered before sending.
"""

from __future__ import annotations

import httpx

from litellm_plugins.billing.exporters.base import Exporter, check_status, unix
from litellm_plugins.billing.store import Event
from litellm_plugins.credits.money import fmt

PATH = "/v1/billing/meter_events"


def form(event: Event, event_name: str) -> dict[str, str]:
    """``payload[value]`` is the event's credits as a decimal string (the meter aggregates a sum)."""
    return {"event_name": event_name, "identifier": event.event_id, "timestamp": str(unix(event)),
            "payload[stripe_customer_id]": event.customer, "payload[value]": fmt(event.units) or "0"}


def already_known(response: httpx.Response) -> bool:
    if response.status_code != 400:
        return False
    try:
        return response.json()["error"]["code"] == "resource_already_exists"
    except (ValueError, KeyError, TypeError):
        return False


class StripeExporter(Exporter):
    async def send(self, client: httpx.AsyncClient, events: list[Event]) -> None:
        headers = {"Authorization": f"Bearer {self.settings.api_key}"}
        for event in events:
            name = self.code(event)
            if name is None:
                continue
            response = await self.post(client, PATH, data=form(event, name), headers=headers)
            if not already_known(response):
                check_status(response, self.name)
