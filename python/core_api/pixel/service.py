"""Pixel sites: the rules of registering a domain, its settings and the per-tier cap."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from ..clock import Clock, iso
from ..errors import NotFound, ValidationFailed
from ..gateway.invalidation import Invalidator
from ..plans import Plans
from ..storage import Database
from ..storage.base import IntegrityError
from ..web.bodies import Fields
from ..web.listing import ListQuery
from ..web.totals import Totals
from ..workspaces.repo import Workspace
from . import repo
from .repo import SiteRecord, SiteValues
from .sites import SITE_KIND, normalize_host

if TYPE_CHECKING:
    from ..entitlements.service import EntitlementService

FEATURES = ("pageviews", "events", "sessions")
DEFAULT_FEATURES = dict.fromkeys(FEATURES, True)
MAX_LIST_ITEMS = 50
MAX_PATH_LENGTH = 255
FIELDS = {
    "domain",
    "name",
    "enabled",
    "features",
    "sample_rate",
    "allowed_origins",
    "honor_dnt",
    "excluded_paths",
}
# A path prefix or glob: printable ASCII from "/", no spaces, quotes or angle brackets.
# \Z, not $: "$" also matches before a final newline.
_PATH = re.compile(r"^/[!#-&(-;=?-~]*\Z")


def snippet(script_url: str, domain: str) -> str:
    return f'<script defer data-site="{domain}" src="{script_url}"></script>'


def present(record: SiteRecord, script_url: str) -> dict[str, Any]:
    return {
        "id": record.id,
        "domain": record.domain,
        "name": record.name,
        "enabled": record.enabled,
        "features": record.features,
        "sample_rate": record.sample_rate,
        "allowed_origins": list(record.allowed_origins),
        "honor_dnt": record.honor_dnt,
        "excluded_paths": list(record.excluded_paths),
        "snippet": snippet(script_url, record.domain),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }


def _domain(body: Fields, name: str, value: str) -> str | None:
    """A registrable host name: letters, digits and hyphens, at least two labels."""
    host = normalize_host(value)
    if (
        host is None
        or host != value.strip().lower().rstrip(".")  # a port or other decoration
        or "." not in host
        or any(
            label.startswith("-") or label.endswith("-") or "_" in label
            for label in host.split(".")
        )
        or host.replace(".", "").isdigit()
    ):
        body.fail(
            name, f"The {name} must be a domain name such as example.com (no scheme, port or path)."
        )
        return None
    return host


def _origins(body: Fields) -> tuple[str, ...] | None:
    values = body.string_list("allowed_origins", max_items=MAX_LIST_ITEMS, max_length=253)
    if values is None:
        return None
    hosts = []
    for value in values:
        wildcard = value.startswith("*.")
        host = _domain(body, "allowed_origins", value[2:] if wildcard else value)
        if host is not None:
            hosts.append(f"*.{host}" if wildcard else host)
    return tuple(dict.fromkeys(hosts))


def _paths(body: Fields) -> tuple[str, ...] | None:
    values = body.string_list(
        "excluded_paths", max_items=MAX_LIST_ITEMS, max_length=MAX_PATH_LENGTH
    )
    if values is None:
        return None
    if any(not _PATH.match(v) for v in values):
        body.fail(
            "excluded_paths",
            "Each excluded_paths item must be a path starting with / (prefix, or a glob with *), "
            "without spaces or quotes.",
        )
    return tuple(values)


def _features(body: Fields, current: dict[str, bool]) -> dict[str, bool]:
    value = body.media.get("features")
    if value is None:
        return current
    if not isinstance(value, dict) or not all(
        k in FEATURES and isinstance(v, bool) for k, v in value.items()
    ):
        body.fail(
            "features", "The features must be an object of booleans: pageviews, events, sessions."
        )
        return current
    return {**current, **value}


def _sample_rate(body: Fields, current: float) -> float:
    value = body.media.get("sample_rate")
    if value is None:
        return current
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        body.fail("sample_rate", "The sample_rate must be a number between 0 and 1.")
        return current
    if not 0 <= value <= 1:
        body.fail("sample_rate", "The sample_rate must be between 0 and 1.")
        return current
    return float(value)


def site_values(body: Fields, current: SiteRecord | None) -> SiteValues:
    """A create's or PATCH's values: given fields over the current ones (or defaults)."""
    raw_domain = body.string("domain", required=current is None, max_length=253)
    domain = current.domain if current else ""
    if raw_domain:
        domain = _domain(body, "domain", raw_domain) or domain
    name = body.string("name", max_length=255)
    if name is not None and not name:
        body.fail("name", "The name may not be empty.")
    enabled, honor_dnt = body.boolean("enabled"), body.boolean("honor_dnt")
    origins, paths = _origins(body), _paths(body)
    features = _features(body, current.features if current else DEFAULT_FEATURES)
    sample_rate = _sample_rate(body, current.sample_rate if current else 1.0)
    body.done()
    return SiteValues(
        domain=domain,
        name=name or (current.name if current else domain),
        enabled=(current.enabled if current else True) if enabled is None else enabled,
        features=features,
        sample_rate=sample_rate,
        allowed_origins=origins
        if origins is not None
        else (current.allowed_origins if current else ()),
        honor_dnt=(current.honor_dnt if current else True) if honor_dnt is None else honor_dnt,
        excluded_paths=paths if paths is not None else (current.excluded_paths if current else ()),
    )


def _taken() -> ValidationFailed:
    return ValidationFailed.field("domain", "The domain has already been registered.")


class PixelSiteService:
    def __init__(
        self,
        db: Database,
        plans: Plans,
        clock: Clock,
        invalidator: Invalidator,
        entitlements: EntitlementService,
    ) -> None:
        self.db, self.plans, self.clock, self.invalidator = db, plans, clock, invalidator
        self.entitlements = entitlements
        self.totals = Totals(invalidator, (SITE_KIND,))  # per workspace

    async def _changed(self, workspace_id: int) -> None:
        await self.invalidator.changed((SITE_KIND, workspace_id))

    async def list_page(self, workspace_id: int, query: ListQuery) -> tuple[list[SiteRecord], int]:
        page = await repo.page_in_workspace(self.db, workspace_id, query)
        total = await self.totals.of(
            "pixel_sites",
            workspace_id,
            query,
            len(page),
            lambda: repo.count_in_workspace(self.db, workspace_id, query),
        )
        return page, total

    async def get(self, workspace_id: int, site_id: int) -> SiteRecord:
        found = await repo.get(self.db, workspace_id, site_id)
        if found is None:
            raise NotFound()
        return found

    async def create(self, workspace: Workspace, body: Fields) -> SiteRecord:
        values = site_values(body, None)
        try:
            async with self.db.transaction() as tx:
                # The tier's count (plus the workspace's overrides), exact under concurrency:
                # counted and inserted under the workspace's row lock.
                await self.entitlements.enforce_count(tx, "pixel_sites", workspace.id)
                created = await repo.create(tx, workspace.id, values, self.clock.now_ms())
        except IntegrityError:
            raise _taken() from None
        self.entitlements.events.notify()  # a threshold event may have been published
        await self._changed(workspace.id)
        return created

    async def update(self, workspace: Workspace, site_id: int, body: Fields) -> SiteRecord:
        current = await self.get(workspace.id, site_id)
        values = site_values(body, current)
        try:
            updated = await repo.update(self.db, workspace.id, site_id, values, self.clock.now_ms())
        except IntegrityError:
            raise _taken() from None
        if updated is None:
            raise NotFound()
        await self._changed(workspace.id)
        return updated

    async def delete(self, workspace: Workspace, site_id: int) -> None:
        if not await repo.delete(self.db, workspace.id, site_id):
            raise NotFound()
        await self._changed(workspace.id)
