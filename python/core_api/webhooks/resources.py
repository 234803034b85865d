"""/api/v1/webhooks"""

from __future__ import annotations

import falcon
import falcon.asgi

from ..clock import iso
from ..config import Settings
from ..events import catalogue
from ..events.patterns import MAX_PATTERNS, MAX_TYPE_LENGTH
from ..web.bodies import Fields, read_json
from ..web.context import context_workspace, list_body, list_query
from ..workspaces.service import WorkspaceService
from .repo import DELIVERY_LIST, ENDPOINT_LIST
from .service import (
    DEFAULT_GRACE_HOURS,
    MAX_GRACE_HOURS,
    WebhookService,
    present,
    present_attempt,
    present_delivery,
)

MAX_URL = 2048
MAX_SECRET = 128


class _Base:
    def __init__(
        self, settings: Settings, workspaces: WorkspaceService, webhooks: WebhookService
    ) -> None:
        self.settings, self.workspaces, self.webhooks = settings, workspaces, webhooks


class WebhookCollection(_Base):
    scopes = {"GET": "webhooks:read", "POST": "webhooks:write"}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        query = list_query(req, ENDPOINT_LIST)
        workspace = await context_workspace(req, self.workspaces)
        page, total = await self.webhooks.list_page(workspace.id, query)
        resp.media = list_body(req, page, total, query, present, {}, self.settings.public_url)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = Fields(await read_json(req, self.settings), {"url", "events", "secret"})
        url = body.string("url", required=True, max_length=MAX_URL)
        events = body.string_list("events", max_items=MAX_PATTERNS, max_length=MAX_TYPE_LENGTH)
        if events is None:  # absent, or null
            body.fail("events", "The events field is required: a list of event types.")
        secret = body.string("secret", max_length=MAX_SECRET)
        body.done()
        assert url is not None and events is not None
        workspace = await context_workspace(req, self.workspaces)
        created, shown = await self.webhooks.create(workspace, url, events, secret)
        item = present(created)
        resp.status = falcon.HTTP_201
        resp.media = {
            "message": "Webhook endpoint created successfully.",
            "data": {
                "id": item["id"],
                "url": item["url"],
                "events": item["events"],
                "secret": shown,
                "is_active": item["is_active"],
                "created_at": item["created_at"],
            },
        }


class WebhookItem(_Base):
    scopes = {"GET": "webhooks:read", "PATCH": "webhooks:write", "DELETE": "webhooks:delete"}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        workspace = await context_workspace(req, self.workspaces)
        resp.media = {"data": present(await self.webhooks.get(workspace.id, id))}

    async def on_patch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        body = Fields(await read_json(req, self.settings), {"url", "events", "is_active"})
        url = body.string("url", max_length=MAX_URL)
        if body.has("url") and not url:
            body.fail("url", "The url may not be empty.")
        events = body.string_list("events", max_items=MAX_PATTERNS, max_length=MAX_TYPE_LENGTH)
        is_active = body.boolean("is_active")
        body.done()
        workspace = await context_workspace(req, self.workspaces)
        updated = await self.webhooks.update(
            workspace.id, id, url=url, events=events, is_active=is_active
        )
        resp.media = {"message": "Webhook endpoint updated successfully.", "data": present(updated)}

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int
    ) -> None:
        workspace = await context_workspace(req, self.workspaces)
        await self.webhooks.delete(workspace.id, id)
        resp.status = falcon.HTTP_204


class WebhookTest(_Base):
    scopes = {"POST": "webhooks:write"}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        Fields(await read_json(req, self.settings), set(), required=False).done()
        workspace = await context_workspace(req, self.workspaces)
        resp.media = await self.webhooks.test(workspace.id, id)


class WebhookSecretRotation(_Base):
    scopes = {"POST": "webhooks:write"}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        body = Fields(
            await read_json(req, self.settings), {"grace_period_hours", "secret"}, required=False
        )
        grace = body.integer("grace_period_hours", low=0, high=MAX_GRACE_HOURS)
        secret = body.string("secret", max_length=MAX_SECRET)
        body.done()
        workspace = await context_workspace(req, self.workspaces)
        endpoint, shown, grace_ends = await self.webhooks.rotate(
            workspace.id, id, DEFAULT_GRACE_HOURS if grace is None else grace, secret
        )
        resp.media = {
            "message": "Webhook secret rotated successfully.",
            "data": {
                "id": endpoint.id,
                "secret": shown,
                "previous_secret_expires_at": iso(grace_ends),
            },
        }


class WebhookDeliveries(_Base):
    scopes = {"GET": "webhooks:read"}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int) -> None:
        query = list_query(req, DELIVERY_LIST)
        workspace = await context_workspace(req, self.workspaces)
        page, total = await self.webhooks.deliveries(workspace.id, id, query)
        resp.media = list_body(
            req, page, total, query, present_delivery, {}, self.settings.public_url
        )


class WebhookDelivery(_Base):
    scopes = {"GET": "webhooks:read"}

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int, delivery_id: int
    ) -> None:
        workspace = await context_workspace(req, self.workspaces)
        delivery, attempts = await self.webhooks.delivery(workspace.id, id, delivery_id)
        resp.media = {
            "data": {
                **present_delivery(delivery),
                "attempts": [present_attempt(a) for a in attempts],
            }
        }


class WebhookDeliveryRetry(_Base):
    scopes = {"POST": "webhooks:write"}

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: int, delivery_id: int
    ) -> None:
        Fields(await read_json(req, self.settings), set(), required=False).done()
        workspace = await context_workspace(req, self.workspaces)
        queued = await self.webhooks.retry(workspace.id, id, delivery_id)
        resp.media = {"message": "Delivery queued for retry.", "data": queued}


class EventTypes:
    scopes = {"GET": "webhooks:read"}

    def __init__(self) -> None:
        self.body = {"data": catalogue.present()}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = self.body
