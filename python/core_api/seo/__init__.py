"""SEO reports: POST /api/v1/seo/report, the reports, issues and per-URL score history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..web.routing import ID

if TYPE_CHECKING:
    from ..config import Settings
    from ..jobs import Job
    from ..runtime import Runtime

__all__ = ["JOBS", "register"]

JOBS: tuple[Job, ...] = ()  # nothing in the background: counters are kept with each write


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import (  # here: importing a repo must not pull in HTTP
        SeoHistory,
        SeoIssues,
        SeoReportCollection,
        SeoReportItem,
        SeoReportSubmit,
    )
    from .service import SeoService

    seo = SeoService(runtime.db, runtime.clock, runtime.events)
    workspaces = runtime.workspaces
    app.add_route("/api/v1/seo/report", SeoReportSubmit(settings, workspaces, seo))
    app.add_route("/api/v1/seo/reports", SeoReportCollection(settings, workspaces, seo))
    app.add_route(f"/api/v1/seo/reports/{ID}", SeoReportItem(workspaces, seo))
    app.add_route("/api/v1/seo/issues/{workspace_id:id}", SeoIssues(settings, workspaces, seo))
    app.add_route("/api/v1/seo/history", SeoHistory(settings, workspaces, seo))
