"""Health and readiness for load balancers and orchestrators: /health (kept: liveness
plus a database ping), /healthz (the process is up) and /readyz (the database, Redis
and the schema). All unauthenticated and exempt from rate limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings
    from ..jobs import Job
    from ..runtime import Runtime

JOBS: tuple[Job, ...] = ()


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import Health, Live, Ready  # here: importing a repo must not pull in HTTP

    app.add_route("/health", Health(runtime.db))
    app.add_route("/healthz", Live())
    app.add_route("/readyz", Ready(runtime))
