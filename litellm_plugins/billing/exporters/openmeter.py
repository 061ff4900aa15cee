"""OpenMeter: ``POST {url}/api/v1/events`` with a JSON array of CloudEvents 1.0
(``Content-Type: application/cloudevents-batch+json``), ``Authorization: Bearer <api_key>``.

OpenMeter deduplicates on (``id``, ``source``): ``id`` is our event id, ``source`` the setting.
"""

from __future__ import annotations

from typing import Any

import httpx

from litellm_plugins.billing.exporters.base import Exporter, check_status, iso, properties
from litellm_plugins.billing.store import Event

PATH = "/api/v1/events"
CONTENT_TYPE = "application/cloudevents-batch+json"


def cloud_event(event: Event, type_: str, source: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event.event_id, "source": source, "type": type_,
            "subject": event.customer, "time": iso(event), "datacontenttype": "application/json",
            "data": properties(event)}


class OpenMeterExporter(Exporter):
    async def send(self, client: httpx.AsyncClient, events: list[Event]) -> None:
        batch = [cloud_event(e, code, self.settings.source) for e in events if (code := self.code(e))]
        if not batch:
            return
        response = await self.post(client, PATH, json=batch, headers={
            "Authorization": f"Bearer {self.settings.api_key}", "Content-Type": CONTENT_TYPE})
        check_status(response, self.name)
