"""The pixel ingest service: validate an event, apply the site's rules, hand it to the
per-process buffer. No HTTP here (``track.py``), no SQL (``ingest_repo.py``).

Order of the rules (the first that applies decides):

1. malformed event -> 422 ``validation_failed`` (nothing stored, nothing counted);
2. no site for the page's host, or a disabled one -> 404 ``not_found``;
3. an ``Origin`` (or, for the GIF, a ``Referer``) that the site does not allow -> 403;
4. bots and headless browsers -> ``{"tracked": false}``, counted per site and day;
5. ``DNT: 1`` / ``Sec-GPC: 1`` when the site honours them, an excluded path, a feature
   the site switched off -> ``{"tracked": false}``;
6. database down or buffer full -> 503 with ``Retry-After`` (never a silent drop);
7. the site's sample rate, per visitor (a sampled visitor's whole visit is kept);
8. otherwise buffered: ``{"tracked": true}``, durable within about a second.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .. import _native
from ..clock import Clock
from ..config import Settings
from ..errors import AccessDenied, NotFound, ServiceUnavailable, ValidationFailed
from ..storage import Database
from . import privacy, useragent
from .buffer import EventQueue
from .writer import EventWriter, create_writer

log = logging.getLogger("core_api.pixel")

if TYPE_CHECKING:
    from ..entitlements.meter import Meter
    from ..gateway.invalidation import Invalidator
    from ..runtime import Runtime

MAX_BODY_BYTES = 8192
MAX_URL = 2048
MAX_NAME = 120
MAX_DOMAIN = 253
MAX_PROPS = 30
MAX_PROP_KEY = 64
MAX_PROP_VALUE = 500
MAX_PROPS_BYTES = 2048
SESSION_IDLE_MS = 30 * 60_000
MAX_CACHED_ORIGINS = 10_000
SESSIONS_PER_PROCESS = 450_000  # below a hash-table doubling (2^19 buckets hold 458,752)
RETRY_AFTER_FULL = 1  # seconds: a batch is written well within it
RETRY_AFTER_DOWN = 5
FIELDS = frozenset({"event", "url", "referrer", "user_agent", "properties", "domain"})
PAGEVIEW = "pageview"


class SiteLike(Protocol):
    id: int
    workspace_id: int
    domain: str
    enabled: bool
    features: dict[str, bool]
    sample_rate: float
    honor_dnt: bool
    excluded_paths: tuple[str, ...]
    allowed_origins: tuple[str, ...]

    def allows_origin(self, host: str) -> bool: ...


class Sites(Protocol):
    invalidator: Invalidator

    async def for_host(self, host: str) -> Any: ...  # SiteLike | None (pixel/sites.py)


@dataclass(slots=True)
class Hit:
    """A validated event as the client sent it."""

    name: str
    url: str
    host: str  # the page's host, lower case
    path: str
    referrer: str | None
    user_agent: str | None
    props: str | None  # JSON text
    domain: str | None


@dataclass(slots=True)
class Client:
    """What the request says about its sender (never stored)."""

    ip: str
    user_agent: str
    origin_host: str | None  # Origin (POST) or Referer (GIF) host, if sent
    dnt: str | None
    gpc: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    tracked: bool
    reason: str | None = None

    def body(self) -> dict[str, Any]:
        return {"tracked": True} if self.tracked else {"tracked": False, "reason": self.reason}


TRACKED = Outcome(True)
# PixelGate.decide's codes (rust/python/pixel.rs) for the outcomes it decides.
_BOT, _DO_NOT_TRACK, _EXCLUDED_PATH, _FEATURE_DISABLED, _SAMPLED_OUT, _FULL = range(1, 7)
_NOT_TRACKED = {
    _BOT: Outcome(False, "bot"),
    _DO_NOT_TRACK: Outcome(False, "do_not_track"),
    _EXCLUDED_PATH: Outcome(False, "excluded_path"),
    _FEATURE_DISABLED: Outcome(False, "feature_disabled"),
    _SAMPLED_OUT: Outcome(False, "sampled_out"),
}


# scheme://authority path [?query] [#fragment]: the parts an event needs, in one match.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#\s]*)([^?#\s]*)(?:\?[^#]*)?(?:#(.*))?", re.S)
_HOST = re.compile(r"[a-z0-9._\-]+|\[[0-9a-f:.]+\]")


@functools.lru_cache(maxsize=8192)
def split_url(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, host, path, fragment) of an absolute URL with a plausible host, lower-case
    scheme and host, no port or credentials; None otherwise. Cached: pages repeat."""
    match = _URL.fullmatch(url)
    if match is None:
        return None
    scheme, authority, path, fragment = match.groups()
    host = authority.rpartition("@")[2].lower()
    if not host.startswith("["):
        host, _, port = host.partition(":")
        if port and not port.isdigit():
            return None
    if not host or not _HOST.fullmatch(host):
        return None
    return scheme.lower(), host.rstrip("."), path, fragment or ""


def _string(
    media: dict[str, Any], name: str, limit: int, errors: dict[str, list[str]]
) -> str | None:
    value = media.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        errors[name] = [f"The {name} must be a string."]
        return None
    if len(value) > limit:
        errors[name] = [f"The {name} may not be greater than {limit} characters."]
        return None
    if "\x00" in value:
        errors[name] = [f"The {name} may not contain NUL characters."]
        return None
    return value


def _props(value: Any, errors: dict[str, list[str]]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors["properties"] = ["The properties must be an object."]
        return None
    if not value:
        return None
    if len(value) > MAX_PROPS:
        errors["properties"] = [f"The properties may not have more than {MAX_PROPS} keys."]
        return None
    for key, item in value.items():
        if not key or len(key) > MAX_PROP_KEY or "\x00" in key:
            errors["properties"] = [
                f"Each properties key must be 1 to {MAX_PROP_KEY} characters (no NUL)."
            ]
            return None
        if isinstance(item, str):
            if len(item) > MAX_PROP_VALUE or "\x00" in item:
                errors["properties"] = [
                    f"The properties.{key} may not be greater than {MAX_PROP_VALUE} characters"
                    " (no NUL)."
                ]
                return None
        elif isinstance(item, float):
            if not math.isfinite(item):
                errors["properties"] = [f"The properties.{key} must be a finite number."]
                return None
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -(2**63) <= item < 2**63:
                errors["properties"] = [f"The properties.{key} must fit in 64 bits."]
                return None
        elif item is not None and not isinstance(item, bool):
            errors["properties"] = [
                f"The properties.{key} must be a string, number, boolean or null."
            ]
            return None
    encoded = orjson.dumps(value).decode()
    if len(encoded) > MAX_PROPS_BYTES:
        errors["properties"] = [f"The properties may not exceed {MAX_PROPS_BYTES} bytes as JSON."]
        return None
    return encoded


def parse_hit(media: Any) -> Hit:
    """The event in a body (or the GIF's query), or one 422 listing every problem."""
    if not isinstance(media, dict):
        raise ValidationFailed.field("body", "The request body must be a JSON object.")
    errors: dict[str, list[str]] = {}
    if not FIELDS.issuperset(media):
        for name in media:
            if name not in FIELDS:
                errors[str(name)] = [f"The {name} field is not recognised."]
    get = media.get  # absent optional fields cost one lookup each
    name = None if get("event") is None else _string(media, "event", MAX_NAME, errors)
    if name is not None:
        name = name.strip()
        if not name or not name.isprintable():
            errors["event"] = ["The event must be 1 to 120 printable characters."]
    url = _string(media, "url", MAX_URL, errors)
    parts = None
    if url is None and "url" not in errors:
        errors["url"] = ["The url field is required."]
    elif url is not None:
        parts = split_url(url.strip())
        if parts is None or parts[0] not in ("http", "https"):
            errors["url"] = ["The url must be an absolute http(s) URL."]
    referrer = None if get("referrer") is None else _string(media, "referrer", MAX_URL, errors)
    if referrer is not None:
        referrer = referrer.strip() or None
        if referrer is not None and split_url(referrer) is None:
            errors["referrer"] = ["The referrer must be an absolute URL or empty."]
    agent = None
    if get("user_agent") is not None:
        agent = _string(media, "user_agent", useragent.MAX_LENGTH, errors)
    domain = None if get("domain") is None else _string(media, "domain", MAX_DOMAIN, errors)
    props = None if get("properties") is None else _props(media["properties"], errors)
    if errors:
        raise ValidationFailed(errors)
    assert url is not None and parts is not None
    _, host, path, fragment = parts
    path = path or "/"
    if fragment.startswith(("/", "!/")):  # a hash-routed single-page app: the route
        path = f"{path}#{fragment}"
    return Hit(
        name=name or PAGEVIEW,
        url=url,
        host=host,
        path=path[:MAX_URL],
        referrer=referrer,
        user_agent=agent.strip() if agent else None,
        props=props,
        domain=domain.strip().lower() if domain else None,
    )


def host_of(url: str | None) -> str | None:
    """The lower-case host of a URL (Origin, Referer), or None."""
    if not url or url == "null":
        return None
    parts = split_url(url)
    return None if parts is None else parts[1]


def _bare(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


class PixelIngest:
    """Per process: the salts, the session table, the bot counters and the queue."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        sites: Sites,
        writer: EventWriter | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.sites, self.clock = sites, clock
        self.meter = meter  # pixel_events usage, counted in memory like api_calls
        self.salts = privacy.DailySalts(db, clock, settings.secret_key)
        self.sessions = _native.PixelSessions(SESSIONS_PER_PROCESS, SESSION_IDLE_MS)
        self.queue = EventQueue(
            writer or create_writer(settings), settings.pixel_buffer_size, settings.pixel_batch_size
        )
        self.bots: Counter[tuple[int, int]] = Counter()  # (site_id, day) -> dropped
        self.flush_seconds = settings.pixel_flush_ms / 1000
        self._origins: dict[tuple[int, str, tuple[str, ...], str], bool] = {}
        self._hosts: dict[str, tuple[int, SiteLike | None]] = {}
        # The common case in one Rust call, taught by _decide (rust/pixel_gate.rs).
        self.gate = _native.PixelGate(self.sessions, self.queue.buffer)
        self.flushed_at = time.monotonic()

    async def track(self, hit: Hit, client: Client) -> Outcome:
        head, site = await self._site(hit.domain or hit.host)
        now = self.clock.now_ms()
        outcome = self._decide(hit, client, site, self.salts.keys_for(now), now, head)
        if outcome is None:  # the event is to be kept: today's salt first
            keys = await self.salts.ensure(now)
            outcome = self._decide(hit, client, site, keys, now, head)
        assert outcome is not None
        return outcome

    def track_now(self, hit: Hit, client: Client) -> Outcome | None:
        """``track`` without waiting, or None when the site or today's salt must first be
        loaded from the database (``track`` does that): no coroutine."""
        found = self._cached_site(hit.domain or hit.host, self.sites.invalidator.shared.log_head())
        if found is None:
            return None
        now = self.clock.now_ms()
        return self._decide(hit, client, found[1], self.salts.keys_for(now), now, found[0])

    def track_fast(
        self,
        hit: _native.PixelHit,
        ip: str,
        user_agent: bytes,
        origin: bytes | None,
        dnt: bytes | None,
        gpc: bytes | None,
    ) -> Outcome | None:
        """``track_now`` in one Rust call for an event whose site, user agent and keys
        ``_decide`` has seen (``PixelGate``); None, having changed nothing, otherwise
        (then ``track_now`` or ``track`` decide ``hit.fields()``)."""
        queue = self.queue
        if queue.down:
            return None  # _decide answers the 503
        now = self.clock.now_ms()
        head = self.sites.invalidator.shared.log_head()
        code, value, pending = self.gate.decide(hit, ip, user_agent, origin, dnt, gpc, now, head)
        if code == 0:
            if self.meter is not None:
                self.meter.add(value, "pixel_events")
            if pending >= queue.batch_size:
                queue.kick()
            return TRACKED
        if code < 0:
            return None
        if code == _BOT:
            self.bots[(value, privacy.day_of(now))] += 1
        elif code == _FULL:
            queue.refused += 1
            raise ServiceUnavailable(RETRY_AFTER_FULL)
        return _NOT_TRACKED[code]

    def _decide(
        self,
        hit: Hit,
        client: Client,
        site: SiteLike | None,
        keys: tuple[bytes, bytes | None] | None,
        now: int,
        head: int,
    ) -> Outcome | None:
        """The rules (module docstring) for the site resolved at invalidation-log head
        ``head``; None, having changed nothing, when the event is to be kept and today's
        keys are not loaded. What it used is taught to the gate (``track_fast``)."""
        if site is None or not site.enabled:
            raise NotFound(f"No enabled pixel site for {hit.domain or hit.host}.")
        if hit.domain is not None and not self._allows(site, hit.host):
            raise AccessDenied(message=f"The page's host {hit.host} is not allowed for this site.")
        origin = client.origin_host
        if origin is not None and origin != hit.host and not self._allows(site, origin):
            raise AccessDenied(message=f"The origin {origin} is not allowed for this site.")
        ua = hit.user_agent or client.user_agent
        agent = useragent.classify(ua)
        self.gate.learn_agent(ua, agent.bot, agent.browser, agent.device)
        if agent.bot:
            self.bots[(site.id, privacy.day_of(now))] += 1
            return _NOT_TRACKED[_BOT]
        dnt, gpc = client.dnt, client.gpc
        if (dnt or gpc) and site.honor_dnt and privacy.refuses_tracking(dnt, gpc):
            return _NOT_TRACKED[_DO_NOT_TRACK]
        if site.excluded_paths and privacy.excluded(hit.path, site.excluded_paths):
            return _NOT_TRACKED[_EXCLUDED_PATH]
        features = site.features
        if not features.get("pageviews" if hit.name == PAGEVIEW else "events", True):
            return _NOT_TRACKED[_FEATURE_DISABLED]
        queue = self.queue
        if queue.down:
            raise ServiceUnavailable(RETRY_AFTER_DOWN)
        if queue.buffer.is_full():
            queue.refused += 1
            raise ServiceUnavailable(RETRY_AFTER_FULL)
        if keys is None:
            return None
        visitor, session = self.sessions.identify(keys[0], keys[1], site.id, client.ip, ua, now)
        rate = site.sample_rate
        if rate < 1.0 and (visitor & 0xFFFFFFFF) >= rate * 4_294_967_296:
            return _NOT_TRACKED[_SAMPLED_OUT]
        referrer = None if hit.referrer is None else self._source(site, hit.host, hit.referrer)
        if not queue.push(
            site.id,
            now,
            hit.name,
            hit.path,
            referrer,
            visitor,
            session if features.get("sessions", True) else None,
            agent.browser,
            agent.device,
            hit.props,
        ):
            raise ServiceUnavailable(RETRY_AFTER_FULL)
        if self.meter is not None:
            self.meter.add(site.workspace_id, "pixel_events")
        self._teach(hit.domain or hit.host, head, site, keys, now)
        return TRACKED

    def _teach(
        self, host: str, head: int, site: SiteLike, keys: tuple[bytes, bytes | None], now: int
    ) -> None:
        """Tell the gate the site and keys an event was just tracked with."""
        features = site.features
        self.gate.learn_site(
            host,
            head,
            site.id,
            site.workspace_id,
            site.domain,
            list(site.allowed_origins),
            site.honor_dnt,
            features.get("pageviews", True),
            features.get("events", True),
            features.get("sessions", True),
            site.sample_rate,
            list(site.excluded_paths),
        )
        self.gate.learn_keys(privacy.day_of(now), keys[0], keys[1])

    def _source(self, site: SiteLike, page_host: str, referrer: str) -> str | None:
        """The referrer's host without ``www.``; None for internal navigation (the page's
        own host, or one the site allows)."""
        source = host_of(referrer)
        if source is None:
            return None
        source = _bare(source)
        if source == _bare(page_host) or self._allows(site, source):
            return None  # internal navigation is not a source
        return source

    async def _site(self, host: str) -> tuple[int, SiteLike | None]:
        """``(head, sites.for_host(host))``, remembered until the invalidation log moves
        past ``head``: the directory's own cache changes only then, and one atomic load
        here is cheaper than its per-call host normalisation on every event."""
        head = self.sites.invalidator.shared.log_head()
        found = self._cached_site(host, head)
        if found is not None:
            return found
        site: SiteLike | None = await self.sites.for_host(host)
        if len(self._hosts) >= MAX_CACHED_ORIGINS:
            self._hosts.clear()
        self._hosts[host] = (head, site)
        return head, site

    def _cached_site(self, host: str, head: int) -> tuple[int, SiteLike | None] | None:
        """The remembered ``(head, site)`` of ``host`` (site None: no site) if it was
        remembered at log head ``head``; None otherwise."""
        found = self._hosts.get(host)
        return found if found is not None and found[0] == head else None

    def _allows(self, site: SiteLike, host: str) -> bool:
        """``site.allows_origin(host)``, cached (keyed by what the answer depends on, so an
        edited site gets fresh answers)."""
        key = (site.id, site.domain, site.allowed_origins, host)
        found = self._origins.get(key)
        if found is None:
            if len(self._origins) >= MAX_CACHED_ORIGINS:
                self._origins.clear()
            found = self._origins[key] = site.allows_origin(host)
        return found

    async def flush(self, *, due_only: bool = False) -> int:
        """Write the buffered events and the bot counters. ``due_only`` (the flush job's
        ticks): only once ``pixel_flush_ms`` passed since the last flush (full batches
        do not wait for it: the queue starts their write on push)."""
        if due_only and time.monotonic() - self.flushed_at < self.flush_seconds:
            return 0
        self.flushed_at = time.monotonic()
        written = await self.queue.flush()
        if self.bots:
            counts, self.bots = self.bots, Counter()
            rows = [(site, day, n) for (site, day), n in counts.items()]
            try:
                await self.queue.writer.add_bot_counts(rows)
            except Exception:
                self.bots.update(counts)  # kept for the next flush
                raise
        return written

    async def maintain(self) -> str | None:
        """The salts job: rotate salts, forget idle sessions."""
        self.sessions.sweep(self.clock.now_ms())
        try:
            return await self.salts.rotate()
        finally:
            self.gate.forget()  # relearnt from the next events, with the keys now loaded

    async def close(self) -> None:
        await self.queue.close()

    async def shutdown(self) -> None:
        """A graceful stop: write everything still buffered, say what could not be
        written (the database is unavailable), close the writer's connection."""
        if self.queue.closed:  # closed already (by a test harness): nothing can be written
            return
        try:
            await self.flush(due_only=False)
        finally:
            left = self.queue.buffer.pending + self.queue.buffer.in_flight
            if left:
                log.error("pixel: %d buffered event(s) lost at shutdown", left)
            await self.close()

    def stats(self) -> dict[str, Any]:
        return {**self.queue.stats(), "sessions": len(self.sessions)}


def ingest_of(runtime: Runtime) -> PixelIngest:
    """The runtime's ingest (kept for callers written before Runtime built it)."""
    return runtime.pixel_ingest
