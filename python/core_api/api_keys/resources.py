"""/api/v1/api-keys"""

from __future__ import annotations

import falcon
import falcon.asgi

from ..clock import iso
from ..config import Settings
from ..mcp.registry import ID_PATTERN as MCP_SERVER_ID
from ..web.bodies import Fields, read_json
from ..web.context import context_workspace, list_body, list_query, principal_of
from ..workspaces.service import WorkspaceService
from .repo import LIST_SPEC
from .service import MAX_GRACE_HOURS, ApiKeyService, present, present_with_secret


class ApiKeyCollection:
    scopes = {"GET": "api-keys:read", "POST": "api-keys:write"}

    def __init__(
        self, settings: Settings, workspaces: WorkspaceService, keys: ApiKeyService
    ) -> None:
        self.settings, self.workspaces, self.keys = settings, workspaces, keys

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        query = list_query(req, LIST_SPEC)
        workspace = await context_workspace(req, self.workspaces)
        page, total = await self.keys.list_page(workspace.id, query)
        included = await self.keys.includes(page, query.includes, workspace)
        resp.media = list_body(req, page, total, query, present, included, self.settings.public_url)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = Fields(
            await read_json(req, self.settings),
            {"name", "scopes", "rate_limit_tier", "expires_at", "mcp_servers"},
        )
        name = body.string("name", required=True)
        scopes = body.string_list("scopes", max_items=64, max_length=80)
        tier = body.string("rate_limit_tier", max_length=64)
        expires_at = body.timestamp("expires_at")
        servers = body.string_list("mcp_servers", max_items=64, max_length=64)
        if servers is not None and not all(MCP_SERVER_ID.match(s) for s in servers):
            body.fail(
                "mcp_servers",
                "Each MCP server id is a lowercase letter, then up to 31 of a-z, 0-9, _ and -.",
            )
        body.done()
        assert name is not None
        workspace = await context_workspace(req, self.workspaces)
        created, key = await self.keys.create_for(
            principal_of(req), workspace, name, scopes, tier, expires_at, servers
        )
        resp.status = falcon.HTTP_201
        resp.media = {
            "message": "API key created successfully.",
            "data": present_with_secret(
                created,
                key,
                "scopes",
                "rate_limit_tier",
                "expires_at",
                "mcp_servers",
                "created_at",
            ),
        }


class ApiKeyItem:
    scopes = {"GET": "api-keys:read", "DELETE": "api-keys:delete"}

    def __init__(self, workspaces: WorkspaceService, keys: ApiKeyService) -> None:
        self.workspaces, self.keys = workspaces, keys

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        workspace = await context_workspace(req, self.workspaces)
        resp.media = {"data": present(await self.keys.get(workspace.id, id))}

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int
    ) -> None:
        workspace = await context_workspace(req, self.workspaces)
        await self.keys.revoke(principal_of(req), workspace, id)
        resp.status = falcon.HTTP_204


class ApiKeyRotation:
    scopes = {"POST": "api-keys:write"}

    def __init__(
        self, settings: Settings, workspaces: WorkspaceService, keys: ApiKeyService
    ) -> None:
        self.settings, self.workspaces, self.keys = settings, workspaces, keys

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        body = Fields(
            await read_json(req, self.settings),
            {"grace_period_hours"},
            required=False,
        )
        grace = body.integer("grace_period_hours", low=0, high=MAX_GRACE_HOURS)
        body.done()
        workspace = await context_workspace(req, self.workspaces)
        successor, key, grace_ends = await self.keys.rotate(
            principal_of(req), workspace, id, 24 if grace is None else grace
        )
        resp.media = {
            "message": "API key rotated successfully.",
            "data": {
                **present_with_secret(successor, key, "scopes"),
                "grace_period_ends_at": iso(grace_ends),
            },
        }
