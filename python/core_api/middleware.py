"""Cross-cutting request work, in the order of the request path:

request id -> authenticate (Rust key cache) -> rate limit (Rust buckets) -> authorise
(scopes) -> [idempotency, see idempotency.py] -> responder -> headers.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from typing import Any

import falcon.asgi

from .auth import Authenticator, bearer_token
from .config import Settings
from .errors import AccessDenied, Unauthorized
from .plans import Plans
from .ratelimit import Decision, LocalLimiter, per_minute_tier
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
            incoming if incoming and _REQUEST_ID.match(incoming) else f"req_{secrets.token_hex(12)}"
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

    Resources declare ``scopes = {"GET": "workspaces:read", ...}``; ``public = True``
    resources skip authentication (their own limits apply, e.g. pixel tracking).
    """

    def __init__(
        self,
        settings: Settings,
        plans: Plans,
        auth: Authenticator,
        limiter: LocalLimiter,
        workspaces: WorkspaceService,
    ) -> None:
        self.settings, self.plans, self.auth, self.limiter = settings, plans, auth, limiter
        self.workspaces = workspaces
        self.failure_tier = per_minute_tier("auth-failures", settings.auth_failure_limit)

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        if resource is None or getattr(resource, "public", False):
            return
        generation = self.auth.shared.generation()
        self.workspaces.sync(generation)
        token = bearer_token(req.get_header("Authorization"))
        principal = await self.auth.authenticate(token, generation) if token else None
        if principal is None:
            if self.settings.auth_failure_limit:
                ip = client_ip(req, self.settings)
                decision = await self.limiter.check(b"authfail:" + ip.encode(), self.failure_tier)
                req.context.rate = decision
                if not decision.allowed:
                    raise decision.error()
            raise Unauthorized()
        decision = await self.limiter.check(principal.bucket, self.plans.tiers[principal.tier])
        req.context.rate = decision
        if not decision.allowed:
            raise decision.error()
        req.context.principal = principal
        required = resource.scopes.get(req.method)
        if required is not None and not principal.allows(required):
            raise AccessDenied(required)
