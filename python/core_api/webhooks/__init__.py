"""Webhooks: endpoints, signed delivery of events, secret rotation.

Placeholder until the webhook API lands: no routes and no jobs yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..jobs import Job

if TYPE_CHECKING:
    from ..config import Settings
    from ..runtime import Runtime

__all__ = ["JOBS", "register"]

JOBS: tuple[Job, ...] = ()


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    """No routes yet."""
