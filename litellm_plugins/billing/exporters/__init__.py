"""Receivers behind one small interface (:class:`base.Exporter`): Lago, OpenMeter, Stripe meter events,
and the operators' signed webhooks.

Each module turns outbox events into the receiver's documented request shape (pure functions, unit
tested against the vendor's examples) and says which answers mean "delivered" (docs/billing.md).
"""

from __future__ import annotations

from litellm_plugins.billing.exporters.base import DeliveryError, Exporter
from litellm_plugins.billing.exporters.lago import LagoExporter
from litellm_plugins.billing.exporters.openmeter import OpenMeterExporter
from litellm_plugins.billing.exporters.stripe import StripeExporter
from litellm_plugins.billing.exporters.webhook import WebhookExporter
from litellm_plugins.billing.settings import ExporterSettings

__all__ = ["DeliveryError", "Exporter", "build"]

_TYPES: dict[str, type[Exporter]] = {"lago": LagoExporter, "openmeter": OpenMeterExporter,
                                     "stripe": StripeExporter, "webhook": WebhookExporter}


def build(settings: ExporterSettings) -> Exporter:
    return _TYPES[settings.type](settings)
