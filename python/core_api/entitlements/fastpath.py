"""The ASGI fast path of ``GET /api/v1/entitlements/check``: the same answers as the
Falcon route (``resources.Check`` behind the gateway), without building Falcon's request
and response objects.

A check is the call a product makes before each action it meters, so it is answered as
Unkey answers a verification: from memory. The key comes from the Rust key cache, the
workspace from the access cache and the limit and usage from the entitlement caches
(``EntitlementService.check_now``); the rate limit, ``api_calls``, the scope, the query,
``X-Workspace-ID`` and every error follow the gateway's order (middleware.py).

Handed to the Falcon app before anything is charged: a key not in the cache (or not
usable), an ``Authorization`` that is not a bearer key, a query that needs decoding, and
repeated ``Authorization``, ``X-Workspace-ID`` or ``X-Request-ID`` headers. After the
charge, errors are rendered here (``front.send_failure``), so a request counts once.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import AccessDenied
from ..gateway.auth import Principal, bearer_token
from ..gateway.request_ids import from_header
from ..logs import CURRENT_REQUEST
from ..metrics.registry import REGISTRY
from ..web.context import acting_workspace
from ..web.front import (
    Front,
    LogRequest,
    Receive,
    Scope,
    Send,
    charge,
    header_list,
    send_failure,
    send_json,
)
from .resources import Check, check_params, simple_params

if TYPE_CHECKING:
    from ..config import Settings
    from ..runtime import Runtime

log = logging.getLogger("core_api.errors")

PATH = "/api/v1/entitlements/check"
ROUTE = ("GET", PATH)
_READ = {b"authorization": 0, b"x-workspace-id": 1, b"x-request-id": 2}


def _headers(raw: list[Any]) -> list[str | None] | None:
    """Authorization, X-Workspace-ID and X-Request-ID (latin-1, as Falcon decodes them);
    None when one of them is repeated (Falcon's joining rules then apply)."""
    found: list[str | None] = [None, None, None]
    for name, value in raw:
        slot = _READ.get(name)
        if slot is not None:
            if found[slot] is not None:
                return None
            found[slot] = value.decode("latin-1")
    return found


class FastCheck:
    def __init__(self, front: Front, settings: Settings, runtime: Runtime) -> None:
        self.front = front
        self.auth, self.invalidator = runtime.auth, runtime.auth.invalidator
        self.tiers, self.limiter = runtime.plans.tiers, runtime.limiter
        self.meter = runtime.entitlements.meter if settings.entitlements_metering else None
        self.service, self.workspaces = runtime.entitlements, runtime.workspaces
        self.required = Check.scopes["GET"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        found = _headers(header_list(scope))
        query = scope["query_string"]
        params = simple_params(query.decode("latin-1")) if query else {}
        token = None if found is None else bearer_token(found[0])
        if params is None or token is None:
            await self.front.falcon(scope, receive, send, started)
            return
        self.invalidator.sync()  # evicts what other requests/processes/nodes changed
        principal = self.auth.cached(token, self.invalidator.epoch)
        if type(principal) is not Principal:  # unknown, refused or not cached: Falcon
            await self.front.falcon(scope, receive, send, started)
            return
        assert found is not None
        rid = from_header(found[2])
        rate: list[tuple[bytes, bytes]] | None = None
        try:
            tier, bucket = self.tiers[principal.tier], principal.bucket
            rate = self.limiter.take_headers(bucket, tier) or await charge(
                self.limiter, bucket, tier
            )
            if self.meter is not None:
                self.meter.record_api_call(principal.workspace_id)
            if not principal.allows(self.required):
                raise AccessDenied(self.required)
            feature, quantity = check_params(params)  # 422 before the workspace, as Falcon
            body = self._known(principal, found[1], feature, quantity) or await self._answer(
                principal, found[1], feature, quantity, rid
            )
        except Exception as exc:
            await send_failure(send, ROUTE, rid, started, rate, exc, log)
            return
        headers = [*rate, (b"x-request-id", rid.encode())]
        await send_json(send, 200, orjson.dumps(body), headers)
        REGISTRY.request("GET", PATH, 200, perf_counter() - started)

    def _known(
        self, principal: Principal, workspace_header: str | None, feature: str, quantity: int
    ) -> dict[str, Any] | None:
        """The answer from memory alone: the home workspace and the counts cached."""
        if workspace_header is not None:
            return None
        workspace = self.workspaces.known(principal.user_id, principal.workspace_id)
        return None if workspace is None else self.service.check_now(workspace, feature, quantity)

    async def _answer(
        self,
        principal: Principal,
        workspace_header: str | None,
        feature: str,
        quantity: int,
        rid: str,
    ) -> dict[str, Any]:
        """What needs the database (or X-Workspace-ID): its log lines carry the id."""
        CURRENT_REQUEST.set(LogRequest(rid))
        workspace = await acting_workspace(principal, workspace_header, self.workspaces)
        return await self.service.check(workspace, feature, quantity)


def install(front: Front, runtime: Runtime, settings: Settings) -> None:
    front.add(*ROUTE, FastCheck(front, settings, runtime))
