"""/api/v1/entitlements"""

from __future__ import annotations

import re
from collections.abc import Mapping

import falcon
import falcon.asgi

from ..config import Settings
from ..errors import ValidationFailed
from ..web.bodies import Fields, read_json
from ..web.context import context_workspace
from ..workspaces.service import WorkspaceService
from .service import MAX_QUANTITY, EntitlementService

_CHECK_PARAMS = frozenset({"feature", "quantity"})
_PLAIN = re.compile(r"[a-z0-9_.=&-]+")  # ASCII, nothing percent- or plus-encoded


def simple_params(query: str) -> dict[str, str] | None:
    """``feature=posts&quantity=2`` without falcon's general parser (a check is answered
    from memory, so parsing its query was a visible share of it); None for anything that
    needs decoding, repeats a name or lacks ``=``, which falcon's parser then reads."""
    if not _PLAIN.fullmatch(query):
        return None
    params: dict[str, str] = {}
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        if not sep or name in params:
            return None
        params[name] = value
    return params


def check_params(params: Mapping[str, object]) -> tuple[str, int]:
    """The check's ``feature`` and ``quantity`` from its query parameters (422 otherwise);
    shared with the fast path (fastpath.py)."""
    errors: dict[str, list[str]] = {}
    for name in params.keys() - _CHECK_PARAMS:
        errors[name] = [f"The {name} parameter is not recognised."]
    feature = params.get("feature")
    if not isinstance(feature, str) or not feature:
        errors["feature"] = ["The feature parameter is required."]
    raw = params.get("quantity", "1")
    quantity = 0
    if (
        isinstance(raw, str)
        and raw.isascii()
        and raw.isdigit()
        and len(raw) <= 16
        and int(raw) <= MAX_QUANTITY
    ):
        quantity = int(raw)
    else:
        errors["quantity"] = [f"The quantity must be an integer between 0 and {MAX_QUANTITY}."]
    if errors:
        raise ValidationFailed(errors)
    assert isinstance(feature, str)
    return feature, quantity


class Check:
    scopes = {"GET": "entitlements:read"}

    def __init__(self, service: EntitlementService, workspaces: WorkspaceService) -> None:
        self.service, self.workspaces = service, workspaces

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        feature, quantity = check_params(simple_params(req.query_string) or req.params)
        workspace = await context_workspace(req, self.workspaces)
        resp.media = await self.service.check(workspace, feature, quantity)


class Usage:
    scopes = {"POST": "entitlements:write"}

    def __init__(
        self, settings: Settings, service: EntitlementService, workspaces: WorkspaceService
    ) -> None:
        self.settings, self.service, self.workspaces = settings, service, workspaces

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = Fields(
            await read_json(req, self.settings), {"feature", "quantity", "metadata", "event_id"}
        )
        feature = body.string("feature", required=True, max_length=64)
        quantity = body.integer("quantity", low=-MAX_QUANTITY, high=MAX_QUANTITY)
        if body.has("quantity") and body.media["quantity"] is None:
            body.fail("quantity", "The quantity must be an integer.")
        metadata = body.settings("metadata")
        event_id = body.string("event_id", max_length=255)
        if event_id is not None and not event_id:
            body.fail("event_id", "The event_id may not be empty.")
        body.done()
        assert feature is not None
        workspace = await context_workspace(req, self.workspaces)
        result, duplicate = await self.service.record(
            workspace, feature, 1 if quantity is None else quantity, metadata, event_id
        )
        if duplicate:
            resp.set_header("Idempotent-Replayed", "true")
        resp.media = result


class Summary:
    scopes = {"GET": "entitlements:read"}

    def __init__(self, service: EntitlementService, workspaces: WorkspaceService) -> None:
        self.service, self.workspaces = service, workspaces

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        workspace = await context_workspace(req, self.workspaces)
        resp.media = {"data": await self.service.summary(workspace)}
