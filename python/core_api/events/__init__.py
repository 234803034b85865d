"""Events: the outbox publish API (``publish(tx, ...)`` + ``Notifier.notify()``) and
``POST /api/v1/events`` for the platform's other services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..jobs import Job
from .service import Event, Notifier, publish

if TYPE_CHECKING:
    from ..config import Settings
    from ..runtime import Runtime

__all__ = ["JOBS", "Event", "Notifier", "publish", "register"]

JOBS: tuple[Job, ...] = ()  # deliveries and purges run from webhooks/jobs.py


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import EventCollection

    app.add_route(
        "/api/v1/events",
        EventCollection(settings, runtime.db, runtime.clock, runtime.workspaces, runtime.events),
    )
