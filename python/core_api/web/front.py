"""The ASGI app Granian serves: a few high-volume routes answered by fast paths in front
of the Falcon app, everything else (and the lifespan) by the Falcon app.

A fast path (``pixel/fastpath.py``, ``entitlements/fastpath.py``) answers its route as
the Falcon route and the gateway would, without building Falcon's request and response
objects: same statuses, bodies and headers, tested side by side. What it cannot decide
from memory before anything was charged, it hands to :meth:`Front.falcon`; after a
charge (the rate limit, ``api_calls``) it renders errors itself with :func:`send_failure`,
from the same ``ApiError`` classes as ``errors.py``, so that no request counts twice.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any, Protocol

import orjson

from ..errors import ApiError, ServerError, ServiceUnavailable
from ..gateway.ratelimit import Decision, Limiter
from ..metrics.registry import REGISTRY, ROUTE_KEY
from ..plans import Tier
from ..storage import DatabaseUnavailable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = (b"content-type", b"application/json")


class FastPath(Protocol):
    """Answers one (method, path); ``started`` is the request's arrival (perf_counter)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        pass


class Front:
    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self.routes: dict[tuple[str, str], FastPath] = {}

    def add(self, method: str, path: str, handler: FastPath) -> None:
        self.routes[method, path] = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                await handler(scope, receive, send, started)
                return
        # Inline (not self.falcon): one coroutine less on every other request.
        await self.app(scope, receive, send)
        route = scope.get(ROUTE_KEY)
        if route is not None:
            REGISTRY.request(route[0], route[1], route[2], perf_counter() - started)

    async def falcon(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        """The Falcon app's answer. Metrics: the gateway leaves (method, route template,
        status) in the scope; the time counts from arrival until the answer was sent."""
        await self.app(scope, receive, send)
        route = scope.get(ROUTE_KEY)
        if route is not None:
            REGISTRY.request(route[0], route[1], route[2], perf_counter() - started)


def header_list(scope: Scope) -> list[Any]:
    """The scope's headers as a list of pairs: ASGI allows any iterables (of iterables);
    read them once and keep the list in the scope for Falcon."""
    raw = scope["headers"]
    if type(raw) is not list or (raw and type(raw[0]) not in (tuple, list)):
        raw = scope["headers"] = [tuple(pair) for pair in raw]
    return raw


class Refused(Exception):
    """A rate limit refused the request: its 429 and the decision's headers."""

    def __init__(self, decision: Decision) -> None:
        super().__init__()
        self.error, self.headers = decision.error(), decision.raw_headers()


async def charge(limiter: Limiter, bucket: bytes, tier: Tier) -> list[tuple[bytes, bytes]]:
    """What ``Limiter.take_headers`` left (a refusal, a Redis lease to refill): the
    decision's rate-limit headers, or :class:`Refused`."""
    decision = limiter.check_now(bucket, tier) or await limiter.check(bucket, tier)
    if not decision.allowed:
        REGISTRY.rate_limited(tier.name)
        raise Refused(decision)
    return decision.raw_headers()


async def send_json(send: Send, status: int, body: bytes, headers: list[Any]) -> None:
    """One answer: ``headers`` after the content type and length."""
    head = [JSON, (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    route: tuple[str, str],
    rid: str,
    started: float,
    rate: list[tuple[bytes, bytes]] | None,
    exc: ApiError,
) -> None:
    """``exc``'s answer as ``errors.py`` renders it, with the rate-limit headers ``rate``
    (when the request was charged) and ``X-Request-ID``; recorded under ``route``."""
    media = exc.body()
    if exc.status >= 500:
        media["request_id"] = rid
    headers = [(header_name(k), v.encode()) for k, v in exc.headers.items()]
    if rate is not None:
        headers += rate
    headers.append((b"x-request-id", rid.encode()))
    await send_json(send, exc.status, orjson.dumps(media), headers)
    REGISTRY.request(route[0], route[1], exc.status, perf_counter() - started)


async def send_failure(
    send: Send,
    route: tuple[str, str],
    rid: str,
    started: float,
    rate: list[tuple[bytes, bytes]] | None,
    exc: Exception,
    log: logging.Logger,
) -> None:
    """What a fast path raised after the charge, answered as ``errors.py`` answers it: a
    refusal with its own headers, an ``ApiError`` as itself, the database unavailable as
    a 503 (one log line), anything else as a 500 (logged with its traceback)."""
    error: ApiError
    if isinstance(exc, Refused):
        rate, error = exc.headers, exc.error
    elif isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, DatabaseUnavailable):
        log.warning("storage unavailable request_id=%s %s %s: %s", rid, *route, exc)
        error = ServiceUnavailable()
    else:
        log.error("unhandled error request_id=%s %s %s", rid, *route, exc_info=exc)
        error = ServerError()
    await send_error(send, route, rid, started, rate, error)


@functools.lru_cache(maxsize=64)
def header_name(header: str) -> bytes:
    return header.lower().encode()  # ASGI header names are lower case


class LogRequest:
    """What the log formatter reads of a request (its id, ``logs.current_request_id``),
    for ``CURRENT_REQUEST`` while a fast path awaits something that may log."""

    __slots__ = ("context",)

    def __init__(self, request_id: str) -> None:
        self.context = {"request_id": request_id}
