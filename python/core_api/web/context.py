"""Helpers shared by responders."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import falcon.asgi

from ..errors import ValidationFailed
from ..gateway.auth import Principal
from ..workspaces.repo import Workspace
from ..workspaces.service import WorkspaceService
from .listing import ListQuery, ListSpec, ascii_integer, envelope, parse_list_query, project

MAX_ID = 2**63 - 1  # ids are 64-bit on both backends


class Identified(Protocol):
    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=Identified)


def principal_of(req: falcon.asgi.Request) -> Principal:
    principal: Principal = req.context.principal
    return principal


def list_query(req: falcon.asgi.Request, spec: ListSpec) -> ListQuery:
    return parse_list_query(dict(req.params), spec)


def list_body(
    req: falcon.asgi.Request,
    records: Sequence[R],
    total: int,
    query: ListQuery,
    present: Callable[[R], dict[str, Any]],
    included: dict[str, dict[int, Any]],
    public_url: str | None,
) -> dict[str, Any]:
    data = []
    for record in records:
        item = project(present(record), query.fields)
        for name, by_id in included.items():
            item[name] = by_id.get(record.id)
        data.append(item)
    params = {k: v for k, v in req.params.items() if k != "page"}
    # Behind a proxy the request's own scheme and host may not be what clients use.
    base = (public_url or req.prefix) + req.path
    return envelope(data, total, query, base, params)


def context_workspace(
    req: falcon.asgi.Request, workspaces: WorkspaceService
) -> Coroutine[Any, Any, Workspace]:
    """The workspace a request acts in: ``X-Workspace-ID`` where the key's user is a
    member of it, otherwise the key's home workspace (awaited by the caller: no frame of
    its own)."""
    return acting_workspace(principal_of(req), req.get_header("X-Workspace-ID"), workspaces)


async def acting_workspace(
    principal: Principal, header: str | None, workspaces: WorkspaceService
) -> Workspace:
    """:func:`context_workspace` from the principal and the ``X-Workspace-ID`` header."""
    if header is not None:
        workspace_id = ascii_integer(header, 0, MAX_ID)
        if workspace_id is None:
            raise ValidationFailed.field(
                "X-Workspace-ID", "The X-Workspace-ID header must be a workspace id."
            )
        selected = await workspaces.find(principal.user_id, workspace_id)
        if selected is not None:
            return selected
    return await workspaces.get(principal.user_id, principal.workspace_id)
