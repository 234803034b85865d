"""Webhooks: endpoints (CRUD, test, secret rotation), deliveries (list, get, retry), the
event-type catalogue, and the delivery worker (see delivery.py). Routes under
/api/v1/webhooks; events are published through core_api.events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..web.routing import ID
from .jobs import JOBS

if TYPE_CHECKING:
    from ..config import Settings
    from ..runtime import Runtime

__all__ = ["JOBS", "register"]

DELIVERY_ID = "{delivery_id:id}"


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import (  # here: importing a repo must not pull in HTTP
        EventTypes,
        WebhookCollection,
        WebhookDeliveries,
        WebhookDelivery,
        WebhookDeliveryRetry,
        WebhookItem,
        WebhookSecretRotation,
        WebhookTest,
    )

    args = (settings, runtime.workspaces, runtime.webhooks)
    base = "/api/v1/webhooks"
    app.add_route(base, WebhookCollection(*args))
    app.add_route(f"{base}/event-types", EventTypes())
    app.add_route(f"{base}/{ID}", WebhookItem(*args))
    app.add_route(f"{base}/{ID}/test", WebhookTest(*args))
    app.add_route(f"{base}/{ID}/secret/rotate", WebhookSecretRotation(*args))
    app.add_route(f"{base}/{ID}/deliveries", WebhookDeliveries(*args))
    app.add_route(f"{base}/{ID}/deliveries/{DELIVERY_ID}", WebhookDelivery(*args))
    app.add_route(f"{base}/{ID}/deliveries/{DELIVERY_ID}/retry", WebhookDeliveryRetry(*args))
