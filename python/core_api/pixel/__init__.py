"""Pixel tracking: sites (authenticated CRUD), the public config and pixel.js, stats.

The ingest path (track) registers its own routes and jobs here too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..web.routing import ID
from .jobs import JOBS as INGEST_JOBS
from .maintenance import JOBS as SITE_JOBS

if TYPE_CHECKING:
    from ..config import Settings
    from ..jobs import Job
    from ..runtime import Runtime
    from ..web.front import Front

JOBS: tuple[Job, ...] = SITE_JOBS + INGEST_JOBS


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import (  # here: importing a repo must not pull in HTTP
        PixelConfig,
        PixelScript,
        PixelStatsResource,
        SiteCollection,
        SiteItem,
    )
    from .service import PixelSiteService
    from .stats import PixelStats

    sites = PixelSiteService(
        runtime.db, runtime.plans, runtime.clock, runtime.invalidator, runtime.entitlements
    )
    workspaces = runtime.workspaces
    app.add_route("/api/v1/pixel/sites", SiteCollection(settings, workspaces, sites))
    app.add_route(f"/api/v1/pixel/sites/{ID}", SiteItem(settings, workspaces, sites))
    app.add_route("/api/v1/pixel/config", PixelConfig(runtime.pixel_sites))
    app.add_route("/api/v1/pixel/pixel.js", PixelScript())
    stats = PixelStats(runtime.db, runtime.clock)
    app.add_route("/api/v1/pixel/stats", PixelStatsResource(workspaces, runtime.pixel_sites, stats))
    from .ingest import ingest_of
    from .track import PixelTrack, PixelTrackGif

    ingest = ingest_of(runtime)
    app.add_route("/api/v1/pixel/track", PixelTrack(settings, ingest))
    app.add_route("/api/v1/pixel/track.gif", PixelTrackGif(settings, ingest))


def fast_paths(front: Front, runtime: Runtime, settings: Settings) -> None:
    """``POST /api/v1/pixel/track`` in front of Falcon (fastpath.py)."""
    from .fastpath import install

    install(front, runtime, settings)
