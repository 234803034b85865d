"""The pixel's view of its sites: which site a host belongs to, with its settings.

Config and ingest ask :class:`SiteDirectory` for every request, so it answers from a
per-process cache (unknown hosts too: a flood for an unregistered domain costs one
query per host and process). Any site change clears it in every process and node
through the invalidator (see ``gateway/invalidation.py``); it fills only under the
invalidator's ``mark``/``untouched`` guard, so a value read before a change is never
cached after it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..gateway.invalidation import Invalidator, Kind
    from ..storage import Database

# A site change emits ("pixel_site", its workspace's id): any such target clears this
# directory (a new site changes what unknown hosts resolve to), and the id scopes the
# workspace's cached site-list total. No other cache depends on sites.
SITE_KIND: Kind = "pixel_site"
_MAX_CACHED = 20_000
_MAX_HOST = 253


@dataclass(frozen=True, slots=True)
class Site:
    id: int
    workspace_id: int
    domain: str
    enabled: bool
    features: dict[str, bool] = field(hash=False)
    sample_rate: float
    allowed_origins: tuple[str, ...]
    honor_dnt: bool
    excluded_paths: tuple[str, ...]
    created_at: int = 0  # epoch ms; stats need no day before it

    def allows_origin(self, host: str) -> bool:
        """Whether a page on ``host`` may use this site: its domain, ``www.`` + domain, an
        allowed host, or a subdomain of a ``*.example.com`` pattern (not the bare parent)."""
        host = normalize_host(host) or ""
        if host == self.domain or host == "www." + self.domain:
            return True
        for allowed in self.allowed_origins:
            if allowed.startswith("*."):
                if host.endswith(allowed[1:]) and len(host) > len(allowed) - 1:
                    return True
            elif host == allowed:
                return True
        return False


def normalize_host(value: str) -> str | None:
    """A host as sites store it: lower case, no port, no trailing dot; None if it is not a
    plausible host name (callers treat that as an unknown site)."""
    host = value.strip().lower()
    if host.startswith("["):  # IPv6 literal: never a registered site
        return None
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    host = host.rstrip(".")
    if not host or len(host) > _MAX_HOST or ":" in host:
        return None
    labels = host.split(".")
    for label in labels:
        if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label):
            return None
        if not label.isascii():
            return None
    return host


def candidates(host: str) -> list[str]:
    """Domains that could own ``host``: itself, then each parent with at least two labels
    (``a.blog.example.com`` -> ``blog.example.com`` -> ``example.com``)."""
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(max(1, len(labels) - 1))]


class SiteDirectory:
    """``for_host`` and ``by_id``, cached per process, cleared on any site change."""

    def __init__(self, db: Database, invalidator: Invalidator) -> None:
        self.db, self.invalidator = db, invalidator
        self._hosts: dict[str, Site | None] = {}
        self._ids: dict[int, Site | None] = {}
        self._loading: dict[str, asyncio.Future[Site | None]] = {}
        self.hits = self.misses = 0
        invalidator.subscribe(SITE_KIND, lambda _id: self.clear())
        invalidator.subscribe_flush(self.clear)

    def clear(self) -> None:
        self._hosts.clear()
        self._ids.clear()

    def cache_stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._hosts)}

    async def for_host(self, host: str) -> Site | None:
        """The site a page on ``host`` belongs to (enabled or not), or None: the site whose
        domain is the host (or the host without ``www.``), else the nearest parent domain
        whose site allows the host as an origin."""
        self.invalidator.sync()
        key = normalize_host(host)
        if key is None:
            return None
        if key in self._hosts:
            self.hits += 1
            return self._hosts[key]
        pending = self._loading.get(key)
        if pending is not None:  # one query per host however many requests wait for it
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[Site | None] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            mark = self.invalidator.mark()
            site = await self._resolve(key)
            if self._unchanged(mark):
                self._store(key, site)
            future.set_result(site)
            return site
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._loading[key]

    async def by_id(self, site_id: int) -> Site | None:
        self.invalidator.sync()
        if site_id in self._ids:
            self.hits += 1
            return self._ids[site_id]
        self.misses += 1
        from . import repo  # here: a circular import otherwise (repo builds Site)

        mark = self.invalidator.mark()
        record = await repo.get_by_id(self.db, site_id)
        site = record.site() if record else None
        if self._unchanged(mark):
            if len(self._ids) >= _MAX_CACHED:
                self._ids.clear()
            self._ids[site_id] = site
        return site

    def _unchanged(self, mark: int) -> bool:
        # A created site changes what unknown hosts resolve to, so no target names what a
        # lookup depends on: cache only when nothing at all was logged since ``mark``.
        return self.invalidator.shared.log_head() == mark

    async def _resolve(self, host: str) -> Site | None:
        from . import repo

        names = candidates(host)
        found = {r.domain: r.site() for r in await repo.get_by_domains(self.db, names)}
        for name in names:
            site = found.get(name)
            if site is not None and (name == host or site.allows_origin(host)):
                return site
        return None

    def _store(self, host: str, site: Site | None) -> None:
        if len(self._hosts) >= _MAX_CACHED:
            self._hosts.clear()
        self._hosts[host] = site
