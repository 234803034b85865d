"""/api/v1/workspaces"""

from __future__ import annotations

import falcon
import falcon.asgi

from ..api_keys.service import grantable_tier
from ..config import Settings
from ..web.bodies import Fields, read_json
from ..web.context import context_workspace, list_body, list_query, principal_of
from .repo import LIST_SPEC, Workspace
from .service import SLUG, WorkspaceService, present


def _list_item(workspace: Workspace) -> dict[str, object]:
    return present(workspace, settings=False)


class WorkspaceCollection:
    scopes = {"GET": "workspaces:read", "POST": "workspaces:write"}

    def __init__(self, settings: Settings, workspaces: WorkspaceService) -> None:
        self.settings, self.workspaces = settings, workspaces

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        query = list_query(req, LIST_SPEC)
        page, total = await self.workspaces.list_page(principal_of(req).user_id, query)
        included = await self.workspaces.includes(page, query.includes)
        resp.media = list_body(
            req, page, total, query, _list_item, included, self.settings.public_url
        )

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = Fields(await read_json(req, self.settings), {"name", "slug", "tier"})
        name = body.string("name", required=True)
        slug = body.string("slug")
        tier = body.string("tier", max_length=64)
        if slug is not None and not SLUG.match(slug):
            body.fail(
                "slug", "The slug may only contain lowercase letters, numbers and single dashes."
            )
        body.done()
        assert name is not None
        principal = principal_of(req)
        acting = await context_workspace(req, self.workspaces)
        ceiling = grantable_tier(self.workspaces.plans, principal, acting.tier)
        created = await self.workspaces.create(principal.user_id, ceiling, name, slug, tier, acting)
        item = present(created, settings=False)
        del item["updated_at"]
        resp.status = falcon.HTTP_201
        resp.media = {"message": "Workspace created successfully.", "data": item}


class WorkspaceItem:
    scopes = {"GET": "workspaces:read", "PATCH": "workspaces:write", "DELETE": "workspaces:delete"}

    def __init__(self, settings: Settings, workspaces: WorkspaceService) -> None:
        self.settings, self.workspaces = settings, workspaces

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        workspace = await self.workspaces.get(principal_of(req).user_id, id)
        resp.media = {"data": present(workspace)}

    async def on_patch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        body = Fields(await read_json(req, self.settings), {"name", "tier", "settings"})
        name = body.string("name", required=body.has("name"))
        tier = body.string("tier", max_length=64)
        settings = body.settings("settings")
        body.done()
        principal = principal_of(req)
        home = await self.workspaces.get(principal.user_id, principal.workspace_id)
        ceiling = grantable_tier(self.workspaces.plans, principal, home.tier)
        updated = await self.workspaces.update(principal.user_id, id, ceiling, name, tier, settings)
        resp.media = {"message": "Workspace updated successfully.", "data": present(updated)}

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int
    ) -> None:
        await self.workspaces.delete(principal_of(req).user_id, id)
        resp.status = falcon.HTTP_204
