"""Pixel tracking: public, limited per client IP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings
    from ..jobs import Job
    from ..runtime import Runtime

JOBS: tuple[Job, ...] = ()


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import PixelConfig  # here: importing a repo must not pull in HTTP

    app.add_route("/api/v1/pixel/config", PixelConfig())
