"""/api/v1/seo: submit a report, read reports, issues and a URL's score history."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from ..config import Settings
from ..errors import ValidationFailed
from ..web.bodies import read_json
from ..web.context import context_workspace, list_body, principal_of
from ..web.listing import ListQuery, ListSpec, parse_list_query
from ..workspaces.service import WorkspaceService
from . import repo
from .service import SeoService, present_detail, present_issue, present_point, present_report
from .validation import IssueFilter, report_input, take_filters

_ISSUE_FILTERS = frozenset({"severity", "issue_type", "url"})
_URL_FILTER = frozenset({"url"})


def _query(
    req: falcon.asgi.Request, spec: ListSpec, names: frozenset[str]
) -> tuple[IssueFilter, ListQuery]:
    """This list's own filters and the shared conventions, as one 422 when both fail."""
    errors: dict[str, list[str]] = {}
    filters, rest = take_filters(dict(req.params), names, errors)
    try:
        query = parse_list_query(rest, spec)
    except ValidationFailed as failed:
        raise ValidationFailed({**errors, **failed.errors}) from None
    if errors:
        raise ValidationFailed(errors)
    return filters, query


class SeoReportSubmit:
    scopes = {"POST": "seo:write"}

    def __init__(self, settings: Settings, workspaces: WorkspaceService, seo: SeoService) -> None:
        self.settings, self.workspaces, self.seo = settings, workspaces, seo

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        report = report_input(await read_json(req, self.settings))
        workspace = await context_workspace(req, self.workspaces)
        stored, issues = await self.seo.submit(workspace.id, report)
        resp.status = falcon.HTTP_201
        resp.media = {"message": "SEO report stored.", "data": present_detail(stored, issues)}


class SeoReportCollection:
    scopes = {"GET": "seo:read"}

    def __init__(self, settings: Settings, workspaces: WorkspaceService, seo: SeoService) -> None:
        self.settings, self.workspaces, self.seo = settings, workspaces, seo

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        filters, query = _query(req, repo.REPORT_SPEC, _URL_FILTER)
        workspace = await context_workspace(req, self.workspaces)
        page, total = await self.seo.reports_page(workspace.id, filters.url, query)
        resp.media = list_body(
            req, page, total, query, present_report, {}, self.settings.public_url
        )


class SeoReportItem:
    scopes = {"GET": "seo:read"}

    def __init__(self, workspaces: WorkspaceService, seo: SeoService) -> None:
        self.workspaces, self.seo = workspaces, seo

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        workspace = await context_workspace(req, self.workspaces)
        report, issues = await self.seo.report(workspace.id, id)
        resp.media = {"data": present_detail(report, issues)}


class SeoIssues:
    """The issues of the workspace in the path; a workspace the key's user is not a
    member of is a 404, like any other tenant's resource."""

    scopes = {"GET": "seo:read"}

    def __init__(self, settings: Settings, workspaces: WorkspaceService, seo: SeoService) -> None:
        self.settings, self.workspaces, self.seo = settings, workspaces, seo

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, workspace_id: int
    ) -> None:
        workspace = await self.workspaces.get(principal_of(req).user_id, workspace_id)
        filters, query = _query(req, repo.ISSUE_SPEC, _ISSUE_FILTERS)
        page, total = await self.seo.issues_page(workspace.id, filters, query)
        resp.media = list_body(req, page, total, query, present_issue, {}, self.settings.public_url)


class SeoHistory:
    """``?url=`` (required): that URL's reports as score points, newest first by default."""

    scopes = {"GET": "seo:read"}

    def __init__(self, settings: Settings, workspaces: WorkspaceService, seo: SeoService) -> None:
        self.settings, self.workspaces, self.seo = settings, workspaces, seo

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if "url" not in req.params:
            raise ValidationFailed.field("url", "The url parameter is required.")
        filters, query = _query(req, repo.HISTORY_SPEC, _URL_FILTER)
        workspace = await context_workspace(req, self.workspaces)
        page, total = await self.seo.reports_page(workspace.id, filters.url, query, history=True)
        body: dict[str, Any] = {"url": filters.url}
        body |= list_body(req, page, total, query, present_point, {}, self.settings.public_url)
        resp.media = body
