"""/api/v1/events"""

from __future__ import annotations

import re

import falcon
import falcon.asgi

from ..clock import Clock
from ..config import Settings
from ..storage import Database
from ..web.bodies import Fields, read_json
from ..web.context import context_workspace
from ..workspaces.service import WorkspaceService
from .catalogue import RESERVED_PREFIXES, reserved
from .service import Notifier, iso_ms, publish

_PUBLISHER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_RESERVED = ", ".join(RESERVED_PREFIXES[:-1]) + " and " + RESERVED_PREFIXES[-1]


class EventCollection:
    scopes = {"POST": "events:write"}

    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        workspaces: WorkspaceService,
        notifier: Notifier,
    ) -> None:
        self.settings, self.db, self.clock = settings, db, clock
        self.workspaces, self.notifier = workspaces, notifier

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = Fields(await read_json(req, self.settings), {"type", "data", "id"})
        event_type = body.string("type", required=True, max_length=128)
        event_id = body.string("id", max_length=128)
        data = body.media.get("data", {})
        if not isinstance(data, dict):
            body.fail("data", "The data must be a JSON object.")
        if event_id is not None and not _PUBLISHER_ID.match(event_id):
            body.fail("id", "The id must be 1-128 characters: letters, digits, _ . : -")
        if event_type and reserved(event_type):
            body.fail("type", f"Types under {_RESERVED} are core-api's own.")
        body.done()
        assert event_type is not None
        workspace = await context_workspace(req, self.workspaces)
        async with self.db.transaction() as tx:
            event = await publish(
                tx,
                workspace_id=workspace.id,
                type=event_type,
                data=data,
                now=self.clock.now_ms(),
                event_id=event_id,
                max_bytes=self.settings.webhook_max_payload_bytes,
            )
        if event.deliveries:
            self.notifier.notify()
        resp.status = falcon.HTTP_200 if event.duplicate else falcon.HTTP_202
        resp.media = {
            "message": "Duplicate event id: the first event is returned."
            if event.duplicate
            else "Event accepted.",
            "data": {
                "id": event.id,
                "type": event.type,
                "timestamp": iso_ms(event.timestamp),
                "workspace_id": event.workspace_id,
                "deliveries": event.deliveries,
                "duplicate": event.duplicate,
            },
        }
