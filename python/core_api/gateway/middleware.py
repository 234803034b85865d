"""The request pipeline, in the order of the request path:

authenticate (Rust key cache) -> rate limit (Rust buckets) -> authorise
(scopes) -> idempotency -> responder -> idempotency record, headers (rate limits, request id).

One middleware class runs the whole pipeline: every middleware hook Falcon calls costs
about a microsecond per request, so the stages are services called from here, each
owning its own concern (auth.py, ratelimit.py, idempotency.py).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import falcon.asgi

from ..config import Settings
from ..entitlements.meter import Meter
from ..errors import AccessDenied, Unauthorized
from ..logs import CURRENT_REQUEST
from ..metrics.registry import REGISTRY, ROUTE_KEY
from ..plans import Plans, Tier
from ..workspaces.service import WorkspaceService
from .auth import Authenticator, CacheMiss, Principal, bearer_token
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import METHODS as IDEMPOTENT_METHODS
from .idempotency import IdempotencyGuard
from .ratelimit import Decision, Limiter, per_minute_tier
from .request_ids import request_id


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


UNDECLARED = "Insufficient permissions. This operation declares no scope."


def _undeclared(resource: Any, method: str) -> bool:
    """A responder its resource implements without declaring a scope for it: refused, so
    that a forgotten ``scopes`` entry never opens a route to every key (fail closed).
    Methods the resource does not implement go on to Falcon's 405; OPTIONS is Falcon's."""
    return (
        resource is not None and method != "OPTIONS" and hasattr(resource, f"on_{method.lower()}")
    )


def _trusted(address: str, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in settings.trusted_proxies)


class GatewayMiddleware:
    """Authenticate, rate-limit, authorise and (for writes) apply idempotency.

    Resources declare ``scopes = {"GET": "workspaces:read", ...}``. ``public = True``
    resources skip authentication; if they also name ``ip_limit = "pixel"`` they are
    limited per client IP instead. Unknown ``/api/`` routes are authenticated and limited
    too, so that every API response carries rate-limit headers.
    """

    def __init__(
        self,
        settings: Settings,
        plans: Plans,
        auth: Authenticator,
        limiter: Limiter,
        workspaces: WorkspaceService,
        idempotency: IdempotencyGuard,
        meter: Meter | None = None,
    ) -> None:
        self.settings, self.plans, self.auth, self.limiter = settings, plans, auth, limiter
        self.workspaces, self.idempotency = workspaces, idempotency
        self.meter = meter  # api_calls: requests that passed auth and the limit (429s are free)
        # Per-IP limits; a limit of 0 switches one off (no tier at all).
        self.failure_tier = (
            per_minute_tier("auth-failures", settings.auth_failure_limit)
            if settings.auth_failure_limit
            else None
        )
        self.ip_tiers = (
            {"pixel": per_minute_tier("pixel", settings.pixel_rate_limit)}
            if settings.pixel_rate_limit
            else {}
        )

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        CURRENT_REQUEST.set(req)  # log lines written while serving it carry its id
        if resource is None and not req.path.startswith("/api/"):
            return
        if getattr(resource, "public", False):
            await self._limit_ip(req, getattr(resource, "ip_limit", None))
            return
        self.auth.invalidator.sync()  # evicts what other requests/processes/nodes changed
        generation = self.auth.invalidator.epoch
        token = bearer_token(req.get_header("Authorization"))
        principal: Principal | None = None
        if token:
            found = self.auth.cached(token, generation)
            if isinstance(found, CacheMiss):
                principal = await self.auth.load(found, generation)
            else:
                principal = found
        if principal is None:
            if self.failure_tier is not None:
                ip = client_ip(req, self.settings)
                await self._charge(b"authfail:" + ip.encode(), self.failure_tier, req)
            raise Unauthorized()
        tier = self.plans.tiers[principal.tier]
        decision = self.limiter.check_now(principal.bucket, tier)
        self._record(decision or await self.limiter.check(principal.bucket, tier), req)
        req.context.principal = principal
        if self.meter is not None:
            self.meter.record_api_call(principal.workspace_id)  # a dict increment
        required = getattr(resource, "scopes", {}).get(req.method)
        if required is None:
            if _undeclared(resource, req.method):
                raise AccessDenied(message=UNDECLARED)
        elif not principal.allows(required):
            raise AccessDenied(required)
        if req.method in IDEMPOTENT_METHODS:
            key = req.get_header(IDEMPOTENCY_HEADER)
            if key is not None:
                await self.idempotency.begin(req, resp, key)

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, ok: bool
    ) -> None:
        if req.method in IDEMPOTENT_METHODS:
            await self.idempotency.finish(req, resp)
        decision: Decision | None = req.context.get("rate")
        headers = []
        if decision is not None and not (
            resp.status_code == 429 and resp.get_header("X-RateLimit-Limit")
        ):  # a 429 from another limit (an MCP server's) carries that limit's headers
            headers = decision.headers()
        headers.append(("X-Request-ID", request_id(req)))
        resp.set_headers(headers)  # one call: set_header per header showed in profiles
        # Metrics: what the ASGI front (web/front.py) records once the answer is sent.
        req.scope[ROUTE_KEY] = (req.method, req.uri_template, resp.status)

    async def _limit_ip(self, req: falcon.asgi.Request, name: str | None) -> None:
        tier = self.ip_tiers.get(name or "")
        if tier is not None:
            await self._charge(f"{name}:{client_ip(req, self.settings)}".encode(), tier, req)

    async def _charge(self, bucket: bytes, tier: Tier, req: falcon.asgi.Request) -> None:
        # Local buckets answer synchronously; only a Redis lease refill needs awaiting.
        decision = self.limiter.check_now(bucket, tier) or await self.limiter.check(bucket, tier)
        self._record(decision, req)

    def _record(self, decision: Decision, req: falcon.asgi.Request) -> None:
        req.context.rate = decision
        if not decision.allowed:
            REGISTRY.rate_limited(decision.tier.name)
            raise decision.error()
