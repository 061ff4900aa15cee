"""Operators' webhooks, signed as the Standard Webhooks spec describes (standardwebhooks.com).

One ``POST {url}`` per event, JSON body ``{"type", "timestamp", "data"}``, headers ``webhook-id`` (our
stable id: the outbox event id + ``:`` + the type, the same on every re-send, for the receiver's
dedupe), ``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature`` =
``v1,`` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")), where the key is the base64 part of
the ``whsec_...`` secret. Same outbox, cursor, retries and dead letters as the billing exporters.

Events: ``low_balance`` (a charge took the account's balance below ``low_balance_credits``: sent
once per crossing, from the ledger's ``balance_after``), ``credits_exhausted`` (an account's first
402 per balance version, from the 402's usage row: migration ``20261202005000``), ``provider_down`` /
``provider_up`` (a deployment's health flipped, from ``health_events``), ``allowance_reset`` (a tier
allowance was refilled for a period, or raised by a mid-period upgrade: the ledger's ``allowance``
entries, migration ``20261202010000``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from litellm_plugins.billing.exporters.base import Exporter, check_status, iso
from litellm_plugins.billing.store import Event
from litellm_plugins.credits.money import credits_to_units, fmt


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def allowance_reset(event: Event) -> dict[str, Any]:
    """``data`` of an ``allowance_reset``. The ledger's idempotency key is ``allowance:<account>:<period>``
    (a period's refill) or ``allowance:<account>:<period>:<amount>`` (a mid-period upgrade); accounts
    contain ``:`` (``user:alice``), so the account's prefix is cut off whole, not split on."""
    data = event.data or {}
    key = str(data.get("idempotency_key") or "")
    prefix = f"allowance:{event.account}:"
    period = key[len(prefix):] if key.startswith(prefix) else key
    head, _, tail = period.rpartition(":")
    upgrade = bool(head) and tail.removeprefix("-").isdigit()
    if upgrade:
        period = head
    amount = data.get("allowance")
    return {"account": event.account, "period": period or None,
            "allowance": "unlimited" if amount is not None and int(amount) < 0 else fmt(amount),
            "added": fmt(event.units),
            "balance": fmt(event.balance_after) if event.balance_after is not None else None,
            "upgrade": upgrade}


def message(event: Event, threshold_units: int) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of the webhook this outbox event makes, or None."""
    if event.kind in ("provider_down", "provider_up"):
        return event.kind, dict(event.data or {})
    if event.kind == "credits_exhausted":
        data = event.data or {}
        return event.kind, {"account": event.account,
                            "balance": fmt(event.balance_after) if event.balance_after is not None else None,
                            "call_id": data.get("call_id"), "requested_model": data.get("requested_model")}
    if event.kind == "allowance_reset":
        return event.kind, allowance_reset(event)
    if event.kind == "charge" and event.balance_after is not None \
            and event.balance_after < threshold_units <= event.balance_after + event.units:
        return "low_balance", {"account": event.account, "balance": fmt(event.balance_after),
                               "threshold": fmt(threshold_units), "charge_id": event.event_id}
    return None


class WebhookExporter(Exporter):
    def code(self, event: Event) -> str | None:
        made = message(event, self.threshold)
        return made[0] if made and made[0] in self.settings.events else None

    @property
    def threshold(self) -> int:
        return credits_to_units(self.settings.low_balance_credits)

    async def send(self, client: httpx.AsyncClient, events: list[Event]) -> None:
        for event in events:
            made = message(event, self.threshold)
            if made is None or made[0] not in self.settings.events:
                continue
            type_, data = made
            msg_id = f"{event.event_id}:{type_}"
            body = json.dumps({"type": type_, "timestamp": iso(event), "data": data}, separators=(",", ":"))
            now = int(time.time())
            response = await self.post(client, "", content=body, headers={
                "content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(now),
                "webhook-signature": signature(self.settings.api_key, msg_id, now, body)})
            check_status(response, self.name)
