"""Lago: ``POST {url}/api/v1/events/batch`` with at most 100 events, ``Authorization: Bearer <api_key>``.

Lago deduplicates on ``transaction_id`` (= our event id). An older Lago answers a batch with an
already-known ``transaction_id`` with 422 ``value_already_exist`` for those indexes and stores none
of the batch: the known events are delivered, so the rest is sent again without them.
"""

from __future__ import annotations

from typing import Any

import httpx

from litellm_plugins.billing.exporters.base import Exporter, check_status, properties, unix
from litellm_plugins.billing.store import Event

PATH = "/api/v1/events/batch"


def event_body(event: Event, code: str) -> dict[str, Any]:
    return {"transaction_id": event.event_id, "external_subscription_id": event.customer, "code": code,
            "timestamp": unix(event), "properties": properties(event)}


def known_indexes(response: httpx.Response) -> set[int] | None:
    """Indexes Lago refused only because their transaction_id exists; None if any other error."""
    try:
        details = response.json().get("error_details")
    except (ValueError, AttributeError):
        return None
    if not isinstance(details, dict) or not details:
        return None
    known: set[int] = set()
    for index, errors in details.items():
        if not str(index).isdigit() or not isinstance(errors, dict):
            return None
        if errors.get("transaction_id") != ["value_already_exist"] or len(errors) != 1:
            return None
        known.add(int(index))
    return known


class LagoExporter(Exporter):
    async def send(self, client: httpx.AsyncClient, events: list[Event]) -> None:
        bodies = [event_body(e, code) for e in events if (code := self.code(e))]
        headers = {"Authorization": f"Bearer {self.settings.api_key}"}
        while bodies:
            response = await self.post(client, PATH, json={"events": bodies}, headers=headers)
            known = known_indexes(response) if response.status_code == 422 else None
            if not known:
                check_status(response, self.name)
                return
            bodies = [b for i, b in enumerate(bodies) if i not in known]
