"""/api/v1/pixel: sites (authenticated), config and pixel.js (public), stats (authenticated)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import falcon
import falcon.asgi

from ..config import Settings
from ..errors import NotFound, ValidationFailed
from ..web.bodies import Fields, read_json
from ..web.context import context_workspace, list_body, list_query
from ..web.listing import ascii_integer
from ..web.static import send
from ..workspaces.service import WorkspaceService
from .repo import LIST_SPEC, SiteRecord
from .service import FIELDS, PixelSiteService, present
from .sites import Site, SiteDirectory
from .snippet import CACHE_CONTROL, Script
from .stats import MAX_DAYS, MAX_HOURLY_DAYS, PixelStats, StatsQuery, timezone_setting, zone

MAX_ID = 2**63 - 1
CONFIG_MAX_AGE = 60
DISABLED = {
    "enabled": False,
    "features": {"pageviews": False, "events": False, "sessions": False},
    "sample_rate": 0.0,
}


def script_url(req: falcon.asgi.Request, settings: Settings) -> str:
    return (settings.public_url or req.prefix) + "/api/v1/pixel/pixel.js"


class SiteCollection:
    scopes = {"GET": "pixel:read", "POST": "pixel:write"}

    def __init__(
        self, settings: Settings, workspaces: WorkspaceService, sites: PixelSiteService
    ) -> None:
        self.settings, self.workspaces, self.sites = settings, workspaces, sites

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        query = list_query(req, LIST_SPEC)
        workspace = await context_workspace(req, self.workspaces)
        page, total = await self.sites.list_page(workspace.id, query)
        url = script_url(req, self.settings)
        summary = {"id": workspace.id, "name": workspace.name, "slug": workspace.slug}
        included = {"workspace": {s.id: summary for s in page}} if query.includes else {}

        def shown(record: SiteRecord) -> dict[str, object]:
            return present(record, url)

        resp.media = list_body(req, page, total, query, shown, included, self.settings.public_url)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = Fields(await read_json(req, self.settings), FIELDS)
        workspace = await context_workspace(req, self.workspaces)
        created = await self.sites.create(workspace, body)
        resp.status = falcon.HTTP_201
        resp.media = {
            "message": "Pixel site created successfully.",
            "data": present(created, script_url(req, self.settings)),
        }


class SiteItem:
    scopes = {"GET": "pixel:read", "PATCH": "pixel:write", "DELETE": "pixel:delete"}

    def __init__(
        self, settings: Settings, workspaces: WorkspaceService, sites: PixelSiteService
    ) -> None:
        self.settings, self.workspaces, self.sites = settings, workspaces, sites

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        workspace = await context_workspace(req, self.workspaces)
        record = await self.sites.get(workspace.id, id)
        resp.media = {"data": present(record, script_url(req, self.settings))}

    async def on_patch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        body = Fields(await read_json(req, self.settings), FIELDS)
        workspace = await context_workspace(req, self.workspaces)
        updated = await self.sites.update(workspace, id, body)
        resp.media = {
            "message": "Pixel site updated successfully.",
            "data": present(updated, script_url(req, self.settings)),
        }

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int
    ) -> None:
        workspace = await context_workspace(req, self.workspaces)
        await self.sites.delete(workspace, id)
        resp.status = falcon.HTTP_204


def _host_of(url: str | None) -> str | None:
    if not url or url == "null":
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def config_body(site: Site | None, page_host: str | None) -> dict[str, object]:
    if site is None or not site.enabled:
        return DISABLED
    if page_host is not None and not site.allows_origin(page_host):
        return DISABLED
    # The documented body only: excluded paths and the like are enforced at ingest and
    # are nobody else's business (they may name private parts of a site).
    return {"enabled": True, "features": site.features, "sample_rate": site.sample_rate}


class PixelConfig:
    """The config for the page asking: its site by ``?site=`` (checked against the page's
    Origin or Referer), else by the page's Origin, else its Referer. Anything unknown,
    disabled or not allowed is the disabled config, never an error page."""

    public = True
    ip_limit = "pixel"

    def __init__(self, directory: SiteDirectory) -> None:
        self.directory = directory

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        origin = req.get_header("Origin")
        page_host = _host_of(origin) or _host_of(req.get_header("Referer"))
        named = req.get_param("site")
        host = named if named else page_host
        site = await self.directory.for_host(host) if host else None
        resp.media = config_body(site, page_host if named else None)
        resp.set_headers(
            [
                ("Access-Control-Allow-Origin", "*"),
                ("Cache-Control", f"public, max-age={CONFIG_MAX_AGE}"),
                ("Vary", "Origin"),
            ]
        )

    async def on_options(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.status = falcon.HTTP_204
        resp.set_headers(
            [
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Methods", "GET, OPTIONS"),
                ("Access-Control-Max-Age", "86400"),
            ]
        )


class PixelScript:
    """pixel.js: not charged to the per-IP pixel limit (a static, cacheable file)."""

    public = True

    def __init__(self) -> None:
        self.script = Script.load()

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        headers = [
            ("Cache-Control", CACHE_CONTROL),
            ("Access-Control-Allow-Origin", "*"),
            ("Cross-Origin-Resource-Policy", "cross-origin"),
        ]
        send(req, resp, self.script, "text/javascript; charset=utf-8", headers)


# Local days whose bounds (and hourly buckets) exist in every time zone: the day after
# 9999-12-31 is past datetime's range (a 500 before this bound).
FIRST_DAY, LAST_DAY = dt.date(1970, 1, 1), dt.date(9999, 12, 30)


def _date(value: str | None, name: str, errors: dict[str, list[str]]) -> dt.date | None:
    if value is None:
        return None
    try:
        if len(value) != 10:
            raise ValueError(value)
        day = dt.date.fromisoformat(value)
        if not FIRST_DAY <= day <= LAST_DAY:
            raise ValueError(value)
        return day
    except ValueError:
        errors.setdefault(name, []).append(
            f"The {name} must be a date (YYYY-MM-DD) from {FIRST_DAY} to {LAST_DAY}."
        )
        return None


def stats_query(req: falcon.asgi.Request, today: dt.date) -> tuple[int, StatsQuery]:
    """``site_id`` (required), ``from``/``to`` (local dates, inclusive; default the last
    30 days), ``interval`` (hour|day; default hour for one day), ``limit`` (1..100)."""
    errors: dict[str, list[str]] = {}
    for name, value in req.params.items():
        if name not in {"site_id", "from", "to", "interval", "limit"}:
            errors.setdefault(name, []).append(f"The {name} parameter is not supported here.")
        elif not isinstance(value, str):
            errors.setdefault(name, []).append(f"The {name} parameter may be given only once.")
    if errors:
        raise ValidationFailed(errors)
    params = {k: v for k, v in req.params.items() if isinstance(v, str)}
    site_id = ascii_integer(params.get("site_id", ""), 1, MAX_ID)
    if site_id is None:
        errors["site_id"] = ["The site_id parameter is required: the id of a pixel site."]
    last = _date(params.get("to"), "to", errors) or today
    first = _date(params.get("from"), "from", errors) or last - dt.timedelta(days=29)
    limit = ascii_integer(params.get("limit", "10"), 1, 100)
    if limit is None:
        errors["limit"] = ["The limit must be an integer between 1 and 100."]
    interval = params.get("interval") or ("hour" if first == last else "day")
    if interval not in ("hour", "day"):
        errors["interval"] = ["The interval must be hour or day."]
    span = (last - first).days + 1
    if span < 1:
        errors["from"] = ["The from date must not be after the to date."]
    elif span > MAX_DAYS:
        errors["from"] = [f"A range may span at most {MAX_DAYS} days."]
    elif interval == "hour" and span > MAX_HOURLY_DAYS:
        errors["interval"] = [f"An hourly series may span at most {MAX_HOURLY_DAYS} days."]
    if errors:
        raise ValidationFailed(errors)
    assert site_id is not None and limit is not None
    return site_id, StatsQuery(first, last, interval, limit)


class PixelStatsResource:
    scopes = {"GET": "pixel:read"}

    def __init__(
        self, workspaces: WorkspaceService, directory: SiteDirectory, stats: PixelStats
    ) -> None:
        self.workspaces, self.directory, self.stats = workspaces, directory, stats

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        workspace = await context_workspace(req, self.workspaces)
        tz_name, tz = zone(timezone_setting(workspace.settings))
        site_id, query = stats_query(req, self.stats.today(tz))
        site = await self.directory.by_id(site_id)  # cached; another tenant's is a 404
        if site is None or site.workspace_id != workspace.id:
            raise NotFound()
        report = await self.stats.report(site.id, tz_name, tz, query, site.created_at)
        resp.media = {"data": {"site": {"id": site.id, "domain": site.domain}, **report}}
