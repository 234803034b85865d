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
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

import orjson

from .._native import pixel_headers, pixel_hit
from ..config import Settings
from ..errors import (
    ApiError,
    RequestTimeout,
    ValidationFailed,
)
from ..gateway.middleware import client_ip
from ..gateway.ratelimit import Limiter, per_minute_tier
from ..gateway.request_ids import from_header
from ..logs import CURRENT_REQUEST
from ..metrics.registry import REGISTRY
from ..web.front import (
    Front,
    Message,
    Receive,
    Scope,
    Send,
    charge,
    header_list,
    send_error,
    send_failure,
)
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

log = logging.getLogger("core_api.pixel")

PATH = "/api/v1/pixel/track"
ROUTE = ("POST", PATH)
_TRACKED = b'{"tracked":true}'
_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_VARY = (b"vary", b"Origin")


class _Context:
    __slots__ = ("request_id",)

    def __init__(self, request_id: str | None) -> None:
        self.request_id = request_id

    def get(self, name: str) -> str | None:
        return self.request_id if name == "request_id" else None


class _Peer:
    """What ``client_ip`` and the log formatter read from a request, taken from the
    scope (built only when one of them needs it)."""

    __slots__ = ("context", "forwarded_for", "remote_addr")

    def __init__(
        self, remote_addr: str, forwarded_for: bytes | None, request_id: str | None = None
    ) -> None:
        self.remote_addr, self.forwarded_for = remote_addr, forwarded_for
        self.context = _Context(request_id)

    def get_header(self, name: str) -> str | None:
        """``X-Forwarded-For`` (what ``client_ip`` reads); the id is in ``context``."""
        value = self.forwarded_for if name.lower() == "x-forwarded-for" else None
        return None if value is None else value.decode("latin-1")


class _BodyTimeout(Exception):
    pass


class FastTrack:
    def __init__(
        self,
        front: Front,
        settings: Settings,
        ingest: PixelIngest,
        limiter: Limiter,
    ) -> None:
        self.front, self.settings, self.ingest, self.limiter = front, settings, ingest, limiter
        self.tier = (
            per_minute_tier("pixel", settings.pixel_rate_limit)
            if settings.pixel_rate_limit
            else None
        )
        self.max_body = min(MAX_BODY_BYTES, settings.max_body_bytes)
        self.proxied = bool(settings.trusted_proxies)
        self.deadlines = ReadDeadlines(settings.body_read_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        raw = header_list(scope)
        picked = pixel_headers(raw, self.max_body)  # one pass, in Rust
        if picked is None:
            await self.front.falcon(scope, receive, send, started)  # 411/413/415, chunked: Falcon
            return
        length, agent, origin, dnt, gpc, forwarded, request_id = picked
        try:
            body = await self._read(receive, length)
        except _BodyTimeout:
            rid = from_header(_text(request_id))
            await self._error(send, rid, started, None, RequestTimeout())
            return
        if body is None:
            return  # the client went away
        if len(body) > self.max_body:  # more than declared: Falcon answers
            await self.front.falcon(scope, _replay(body, False, receive), send, started)
            return
        parsed = pixel_hit(body)  # the common case, kept in Rust for the gate
        hit: Hit | None = None
        if parsed is None:  # parse_hit decides the rest (rust/pixel_hit.rs)
            try:
                hit = parse_hit(orjson.loads(body))
            except (orjson.JSONDecodeError, ValidationFailed):
                await self.front.falcon(scope, _replay(body, False, receive), send, started)
                return
        client = scope.get("client")
        remote = client[0] if client else "127.0.0.1"
        rid = from_header(_text(request_id))
        ip = (
            client_ip(cast(Any, _Peer(remote, forwarded)), self.settings)
            if self.proxied
            else remote
        )
        rate: list[tuple[bytes, bytes]] | None = None
        try:
            if self.tier is not None:
                bucket = b"pixel:" + ip.encode()
                rate = self.limiter.take_headers(bucket, self.tier) or await charge(
                    self.limiter, bucket, self.tier
                )
            outcome = None
            if parsed is not None:  # one Rust call when the gate knows site, agent, keys
                outcome = self.ingest.track_fast(parsed, ip, agent, origin, dnt, gpc)
            if outcome is None:
                if hit is None:
                    assert parsed is not None
                    hit = Hit(*parsed.fields())
                sender = (ip, agent, origin, dnt, gpc)
                outcome = await self._track(hit, sender, _Peer(remote, forwarded, rid))
        except Exception as exc:
            await send_failure(send, ROUTE, rid, started, rate, exc, log)
            return
        out = _TRACKED if outcome.tracked else orjson.dumps(outcome.body())
        answer = [_JSON, (b"content-length", b"%d" % len(out)), _NO_STORE]
        if origin is not None:
            answer += ((b"access-control-allow-origin", origin), _VARY)
        if rate is not None:
            answer += rate
        answer.append((b"x-request-id", rid.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": answer})
        await send({"type": "http.response.body", "body": out})
        REGISTRY.request("POST", PATH, 200, perf_counter() - started)

    async def _track(
        self,
        hit: Hit,
        sender: tuple[str, bytes, bytes | None, bytes | None, bytes | None],
        peer: _Peer,
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
            CURRENT_REQUEST.set(peer)
            outcome = await self.ingest.track(hit, client)
        return outcome

    async def _read(self, receive: Receive, length: int) -> bytes | None:
        """The body of a declared ``length`` (at most ``max_body``), None if the client
        disconnected. The read's deadline is kept by ``self.deadlines`` (one
        timer for every request in flight, not one per request).

        Done once the ``Content-Length`` bytes are in: Granian sends a body as a message
        with ``more_body`` and then an empty last one, and waiting for that one costs a
        loop round trip, measured at a fifth of the path's CPU (docs/benchmarks.md). An
        app may answer without reading the rest (ASGI); Granian has read the body off the
        socket by then, so the connection stays usable."""
        deadlines = self.deadlines
        task = deadlines.watch()
        try:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if not more or len(body) >= length:
                return body  # a beacon's body comes in one message
            chunks, size = [body], len(body)
            while more and size < length:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                more = bool(message.get("more_body", False))
            return b"".join(chunks)
        except asyncio.CancelledError:
            if deadlines.expired(task):
                raise _BodyTimeout() from None
            raise
        finally:
            deadlines.done(task)

    async def _error(
        self,
        send: Send,
        rid: str,
        started: float,
        rate: list[tuple[bytes, bytes]] | None,
        exc: ApiError,
    ) -> None:
        await send_error(send, ROUTE, rid, started, rate, exc)


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


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that first gives back what the fast path already read."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


def wrap(app: Any, runtime: Runtime, settings: Settings) -> Front:
    """``app`` (the Falcon app) behind this fast path alone (tests, benchmarks); the
    served app has every feature's (``features.front``)."""
    front = Front(app)
    install(front, runtime, settings)
    return front


def install(front: Front, runtime: Runtime, settings: Settings) -> None:
    front.add("POST", PATH, FastTrack(front, settings, ingest_of(runtime), runtime.limiter))
