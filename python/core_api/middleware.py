"""Cross-cutting request work, in the order of the request path:

request id -> authenticate (Rust key cache) -> rate limit (Rust buckets) -> authorise
(scopes) -> [idempotency, see idempotency.py] -> responder -> headers.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

import falcon.asgi

from .auth import Authenticator, bearer_token
from .config import Settings
from .errors import AccessDenied, Unauthorized
from .plans import Plans, Tier
from .ratelimit import Decision, Limiter, per_minute_tier
from .services.workspaces import WorkspaceService

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def client_ip(req: falcon.asgi.Request, settings: Settings) -> str:
    """The peer address, or the right-most untrusted ``X-Forwarded-For`` hop behind
    configured trusted proxies (never trust the header from anyone else)."""
    remote = req.remote_addr or "unknown"
    if not settings.trusted_proxies or not _trusted(remote, settings):
        return remote
    forwarded = req.get_header("X-Forwarded-For") or ""
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _trusted(hop, settings):
            return hop
    return remote


def _trusted(address: str, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in settings.trusted_proxies)


class RequestIdMiddleware:
    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        incoming = req.get_header("X-Request-ID")
        req.context.request_id = (
            incoming if incoming and _REQUEST_ID.match(incoming) else "req_" + os.urandom(12).hex()
        )

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, ok: bool
    ) -> None:
        resp.set_header("X-Request-ID", req.context.request_id)
        decision: Decision | None = req.context.get("rate")
        if decision is not None:
            for name, value in decision.headers():
                resp.set_header(name, value)


class GatewayMiddleware:
    """Authenticate, rate-limit and authorise every routed request.

    Resources declare ``scopes = {"GET": "workspaces:read", ...}``. ``public = True``
    resources skip authentication; if they also name ``ip_limit = "pixel"`` they are limited
    per client IP instead. Unknown ``/api/`` routes are authenticated and limited too, so
    that every API response carries rate-limit headers.
    """

    def __init__(
        self,
        settings: Settings,
        plans: Plans,
        auth: Authenticator,
        limiter: Limiter,
        workspaces: WorkspaceService,
    ) -> None:
        self.settings, self.plans, self.auth, self.limiter = settings, plans, auth, limiter
        self.workspaces = workspaces
        self.failure_tier = per_minute_tier("auth-failures", settings.auth_failure_limit)
        self.ip_tiers = {"pixel": per_minute_tier("pixel", settings.pixel_rate_limit)}

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        if resource is None and not req.path.startswith("/api/"):
            return
        if getattr(resource, "public", False):
            await self._limit_ip(req, getattr(resource, "ip_limit", None))
            return
        generation = self.auth.shared.generation()
        self.workspaces.sync(generation)
        token = bearer_token(req.get_header("Authorization"))
        principal = await self.auth.authenticate(token, generation) if token else None
        if principal is None:
            if self.settings.auth_failure_limit:
                await self._charge(
                    b"authfail:" + client_ip(req, self.settings).encode(), self.failure_tier, req
                )
            raise Unauthorized()
        await self._charge(principal.bucket, self.plans.tiers[principal.tier], req)
        req.context.principal = principal
        required = getattr(resource, "scopes", {}).get(req.method)
        if required is not None and not principal.allows(required):
            raise AccessDenied(required)

    async def _limit_ip(self, req: falcon.asgi.Request, name: str | None) -> None:
        tier = self.ip_tiers.get(name or "")
        if tier is not None and tier.requests_per_minute > 0:
            await self._charge(f"{name}:{client_ip(req, self.settings)}".encode(), tier, req)

    async def _charge(self, bucket: bytes, tier: Tier, req: falcon.asgi.Request) -> None:
        decision = await self.limiter.check(bucket, tier)
        req.context.rate = decision
        if not decision.allowed:
            raise decision.error()
