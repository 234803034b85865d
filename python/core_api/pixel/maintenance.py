"""Cluster jobs of pixel sites: deleted sites' events, and yesterday's stats ahead of time."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

from ..jobs import Job, Kind
from . import repo
from .stats import PixelStats, timezone_setting, zone

if TYPE_CHECKING:
    from ..runtime import Runtime

PURGE_INTERVAL_SECONDS = 60.0
PURGE_BATCH = 10_000
PURGE_BUDGET_SECONDS = 5.0
STATS_INTERVAL_SECONDS = 600.0
STATS_BUDGET_SECONDS = 30.0


async def purge_deleted_sites(runtime: Runtime) -> str | None:
    """Events of deleted sites (pixel_events has no foreign key), in bounded batches so
    that no statement holds a long lock on the events table."""
    deadline = time.monotonic() + PURGE_BUDGET_SECONDS
    deleted = 0
    for site_id in await repo.pending_purges(runtime.db, 20):
        while time.monotonic() < deadline:
            n = await repo.purge_events(runtime.db, site_id, PURGE_BATCH)
            deleted += n
            if n < PURGE_BATCH:
                break
    return f"purged {deleted} event(s) of deleted pixel sites" if deleted else None


async def store_yesterday(runtime: Runtime) -> str | None:
    """Compute each site's last complete local day before anyone asks for it, so that a
    stats query reads stored days and only today's events."""
    stats = PixelStats(runtime.db, runtime.clock)
    deadline = time.monotonic() + STATS_BUDGET_SECONDS
    after, stored = 0, 0
    while time.monotonic() < deadline:
        batch = await repo.sites_with_settings(runtime.db, after, 200)
        if not batch:
            break
        for site_id, settings in batch:
            name, tz = zone(timezone_setting(settings))
            yesterday = stats.today(tz) - dt.timedelta(days=1)
            before = await repo.cached_days(runtime.db, site_id, name, *[yesterday.isoformat()] * 2)
            if not before:
                await stats.days(site_id, name, tz, yesterday, yesterday)
                stored += 1
        after = batch[-1][0]
    return f"stored yesterday's stats of {stored} pixel site(s)" if stored else None


JOBS = (
    Job("pixel.purge_deleted_sites", PURGE_INTERVAL_SECONDS, purge_deleted_sites, Kind.CLUSTER),
    Job("pixel.store_yesterday", STATS_INTERVAL_SECONDS, store_yesterday, Kind.CLUSTER),
)
