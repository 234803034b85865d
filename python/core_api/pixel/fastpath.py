"""The ASGI fast path of ``POST /api/v1/pixel/track``: the same rules and answers as the
Falcon route (``track.py``), without building Falcon's request and response objects.

Pixel traffic is the service's highest-volume request, so it gets a short path in front
of the Falcon app (``wrap``): headers read once from the ASGI scope, the body read with a
bounded size and a timeout, then the same pieces as the Falcon route and the gateway,
in the same order: validation (``pixel_hit``, the Rust twin of ``parse_hit``, which
decides whatever the twin leaves), the per-IP limiter (``ip_limit = "pixel"``), the
ingest's rules (``PixelIngest.track_fast``: one Rust call once the gate learnt the site,
agent and keys; else ``track_now`` or ``track``), the rate-limit headers and
``X-Request-ID``.

Anything off the common path before the limiter is charged (another content type, a
body that is too large or not JSON, a validation error) is handed to the Falcon app with
the body replayed, so every error answer comes from one place (``errors.py``). After the
limiter was charged, errors are rendered here from the same ``ApiError`` classes (a
second charge by the Falcon route would count the request twice).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

import orjson

from .._native import pixel_hit
from ..config import Settings
from ..errors import (
    ApiError,
    RequestTimeout,
    ServerError,
    ServiceUnavailable,
    ValidationFailed,
)
from ..gateway.middleware import client_ip
from ..gateway.ratelimit import Decision, Limiter, per_minute_tier
from ..gateway.request_ids import from_header
from ..logs import CURRENT_REQUEST
from ..metrics.registry import REGISTRY, ROUTE_KEY
from ..storage import DatabaseUnavailable
from .ingest import (
    MAX_BODY_BYTES,
    Client,
    Hit,
    Outcome,
    PixelIngest,
    host_of,
    ingest_of,
    parse_hit,
)

if TYPE_CHECKING:
    from ..runtime import Runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("core_api.pixel")

PATH = "/api/v1/pixel/track"
_CONTENT_TYPES = frozenset({b"", b"application/json", b"text/plain"})
# What sendBeacon and fetch send, taken as they are (no split/strip/lower per request).
_COMMON_TYPES = _CONTENT_TYPES | {b"text/plain;charset=UTF-8", b"application/json; charset=utf-8"}
_TRACKED = b'{"tracked":true}'
_WANTED = frozenset(
    {
        b"content-type",
        b"content-length",
        b"user-agent",
        b"origin",
        b"dnt",
        b"sec-gpc",
        b"x-forwarded-for",
        b"x-request-id",
    }
)


class _Context:
    __slots__ = ("request_id",)

    def __init__(self, request_id: str | None) -> None:
        self.request_id = request_id

    def get(self, name: str) -> str | None:
        return self.request_id if name == "request_id" else None


class _Peer:
    """What ``client_ip`` and the log formatter read from a request, taken from the
    scope (built only when one of them needs it)."""

    __slots__ = ("context", "headers", "remote_addr")

    def __init__(
        self, remote_addr: str, headers: dict[bytes, bytes], request_id: str | None = None
    ) -> None:
        self.remote_addr, self.headers = remote_addr, headers
        self.context = _Context(request_id)

    def get_header(self, name: str) -> str | None:
        value = self.headers.get(name.lower().encode())
        return None if value is None else value.decode("latin-1")


class _BodyTimeout(Exception):
    pass


class FastTrack:
    def __init__(
        self,
        app: AsgiApp,
        settings: Settings,
        ingest: PixelIngest,
        limiter: Limiter,
    ) -> None:
        self.app, self.settings, self.ingest, self.limiter = app, settings, ingest, limiter
        self.tier = (
            per_minute_tier("pixel", settings.pixel_rate_limit)
            if settings.pixel_rate_limit
            else None
        )
        self.max_body = min(MAX_BODY_BYTES, settings.max_body_bytes)
        self.proxied = bool(settings.trusted_proxies)
        self.deadlines = ReadDeadlines(settings.body_read_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            # Inline (not self._falcon): one coroutine less on every other request.
            await self.app(scope, receive, send)
            route = scope.get(ROUTE_KEY)
            if route is not None:
                REGISTRY.request(route[0], route[1], route[2], perf_counter() - started)
            return
        raw = scope["headers"]
        if type(raw) is not list or (raw and type(raw[0]) not in (tuple, list)):
            # ASGI allows any iterables (of iterables): read them once, keep them for Falcon.
            raw = scope["headers"] = [tuple(pair) for pair in raw]
        headers = {k: v for k, v in raw if k in _WANTED}
        content_type = headers.get(b"content-type", b"")
        accepted = content_type in _COMMON_TYPES or (
            content_type.split(b";", 1)[0].strip().lower() in _CONTENT_TYPES
        )
        length = headers.get(b"content-length")
        if not accepted or length is None or not length.isdigit() or int(length) > self.max_body:
            await self._falcon(scope, receive, send, started)  # 411/413/415, chunked: Falcon
            return
        try:
            body, more = await self._read(receive)
        except _BodyTimeout:
            rid = from_header(_text(headers.get(b"x-request-id")))
            await self._error(send, rid, started, None, RequestTimeout())
            return
        if body is None:
            return  # the client went away
        if more or len(body) > self.max_body:
            await self._falcon(scope, _replay(body, more, receive), send, started)
            return
        parsed = pixel_hit(body)  # the common case, kept in Rust for the gate
        hit: Hit | None = None
        if parsed is None:  # parse_hit decides the rest (rust/pixel_hit.rs)
            try:
                hit = parse_hit(orjson.loads(body))
            except (orjson.JSONDecodeError, ValidationFailed):
                await self._falcon(scope, _replay(body, False, receive), send, started)
                return
        client = scope.get("client")
        remote = client[0] if client else "127.0.0.1"
        rid = from_header(_text(headers.get(b"x-request-id")))
        ip = client_ip(cast(Any, _Peer(remote, headers)), self.settings) if self.proxied else remote
        decision: Decision | None = None
        try:
            if self.tier is not None:
                bucket = b"pixel:" + ip.encode()
                decision = self.limiter.check_now(bucket, self.tier) or await self.limiter.check(
                    bucket, self.tier
                )
                if not decision.allowed:
                    REGISTRY.rate_limited("pixel")
                    raise decision.error()
            origin = headers.get(b"origin")
            agent = headers.get(b"user-agent", b"")
            dnt, gpc = headers.get(b"dnt"), headers.get(b"sec-gpc")
            outcome = None
            if parsed is not None:  # one Rust call when the gate knows site, agent, keys
                outcome = self.ingest.track_fast(parsed, ip, agent, origin, dnt, gpc)
            if outcome is None:
                if hit is None:
                    assert parsed is not None
                    hit = Hit(*parsed.fields())
                sender = (ip, agent, origin, dnt, gpc)
                outcome = await self._track(hit, sender, remote, headers, rid)
        except ApiError as exc:
            await self._error(send, rid, started, decision, exc)
            return
        except DatabaseUnavailable as exc:
            log.warning("storage unavailable request_id=%s POST %s: %s", rid, PATH, exc)
            await self._error(send, rid, started, decision, ServiceUnavailable())
            return
        except Exception as exc:
            log.error("unhandled error request_id=%s POST %s", rid, PATH, exc_info=exc)
            await self._error(send, rid, started, decision, ServerError())
            return
        out = _TRACKED if outcome.tracked else orjson.dumps(outcome.body())
        extra: list[tuple[bytes, bytes]] = []
        if origin is not None:
            extra += [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        await self._send(send, 200, out, rid, started, decision, extra)

    async def _track(
        self,
        hit: Hit,
        sender: tuple[str, bytes, bytes | None, bytes | None, bytes | None],
        remote: str,
        headers: dict[bytes, bytes],
        rid: str,
    ) -> Outcome:
        """What the gate deferred: ``track_now`` when the site and today's salt are in
        memory, else ``track``, whose log lines carry the request id. ``sender``: the IP
        and the User-Agent, Origin, DNT and Sec-GPC headers."""
        ip, agent, origin, dnt, gpc = sender
        client = Client(
            ip=ip,
            user_agent=agent.decode("latin-1"),
            origin_host=None if origin is None else _host_of(origin),
            dnt=_text(dnt),
            gpc=_text(gpc),
        )
        outcome = self.ingest.track_now(hit, client)
        if outcome is None:
            CURRENT_REQUEST.set(_Peer(remote, headers, rid))
            outcome = await self.ingest.track(hit, client)
        return outcome

    async def _falcon(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        """The Falcon app's answer. Metrics: the gateway leaves (method, route template,
        status) in the scope; the time counts from arrival until the answer was sent."""
        await self.app(scope, receive, send)
        route = scope.get(ROUTE_KEY)
        if route is not None:
            REGISTRY.request(route[0], route[1], route[2], perf_counter() - started)

    async def _read(self, receive: Receive) -> tuple[bytes | None, bool]:
        """The body (None if the client disconnected) and whether more was coming when the
        size bound was passed. The read's deadline is kept by ``self.deadlines`` (one
        timer for every request in flight, not one per request)."""
        deadlines = self.deadlines
        task = deadlines.watch()
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None, False
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                more = bool(message.get("more_body", False))
                if not more or size > self.max_body:
                    return b"".join(chunks), more
        except asyncio.CancelledError:
            if deadlines.expired(task):
                raise _BodyTimeout() from None
            raise
        finally:
            deadlines.done(task)

    async def _error(
        self, send: Send, rid: str, started: float, decision: Decision | None, exc: ApiError
    ) -> None:
        body = exc.body()
        if exc.status >= 500:
            body["request_id"] = rid
        extra = [(_name(k), v.encode()) for k, v in exc.headers.items()]
        await self._send(send, exc.status, orjson.dumps(body), rid, started, decision, extra)

    async def _send(
        self,
        send: Send,
        status: int,
        body: bytes,
        rid: str,
        started: float,
        decision: Decision | None,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            *extra,
        ]
        if status == 200:
            headers.append((b"cache-control", b"no-store"))
        if decision is not None:
            headers += decision.raw_headers()
        headers.append((b"x-request-id", rid.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        REGISTRY.request("POST", PATH, status, perf_counter() - started)


class ReadDeadlines:
    """Body-read deadlines of the fast path's requests, enforced by one timer that ticks
    every ``TICK_S`` while reads are in flight: a ``call_later`` and ``cancel`` per
    request cost about a fifth of the path's CPU (uvloop timer handles), a dict entry
    costs next to nothing. A read times out ``timeout`` to ``timeout + 2 * TICK_S`` seconds
    after it started."""

    TICK_S = 0.5

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reading: dict[asyncio.Task[Any], float] = {}  # task -> deadline (loop time)
        self._expired: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._now = 0.0  # the loop's time at the last tick (deadlines are this coarse)

    def watch(self) -> asyncio.Task[Any]:
        """Start the current task's deadline; the caller calls ``done`` when the read ends."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        if loop is not self._loop:  # first use, or a new event loop (tests)
            self._loop, self._now = loop, loop.time()
            loop.call_later(self.TICK_S, self._tick, loop)
        self.reading[task] = self._now + self.TICK_S + self.timeout  # _now lags <= 1 tick
        return task

    def done(self, task: asyncio.Task[Any]) -> None:
        self.reading.pop(task, None)
        if self._expired:
            self._expired.discard(task)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled by its deadline (and not by anything else)."""
        return task in self._expired and task.uncancel() == 0

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # superseded by a newer loop's timer
        now = self._now = loop.time()
        late = [task for task, deadline in self.reading.items() if deadline <= now]
        for task in late:
            del self.reading[task]
            self._expired.add(task)
            task.cancel()
        if self.reading:
            loop.call_later(self.TICK_S, self._tick, loop)
        else:
            self._loop = None  # idle: no timer until the next read


@functools.lru_cache(maxsize=1024)
def _host_of(origin: bytes) -> str | None:
    """The host of an ``Origin`` header (sites send a handful of distinct ones)."""
    return host_of(origin.decode("latin-1"))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


@functools.lru_cache(maxsize=64)
def _name(header: str) -> bytes:
    return header.lower().encode()  # ASGI header names are lower case


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that first gives back what the fast path already read."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


def wrap(app: Any, runtime: Runtime, settings: Settings) -> AsgiApp:
    """``app`` (the Falcon app) behind the track fast path; lifespan and every other
    request go straight to ``app``."""
    return FastTrack(app, settings, ingest_of(runtime), runtime.limiter)
