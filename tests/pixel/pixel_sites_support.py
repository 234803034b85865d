"""Helpers for the pixel sites/config/stats tests: events written straight into
pixel_events with the shared contract's columns (the ingest path is tested on its own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.runtime import Runtime

SITES = "/api/v1/pixel/sites"
CONFIG = "/api/v1/pixel/config"
STATS = "/api/v1/pixel/stats"
SCRIPT = "/api/v1/pixel/pixel.js"

EVENTS_DDL = (
    "CREATE TABLE IF NOT EXISTS pixel_events (site_id BIGINT NOT NULL, ts BIGINT NOT NULL, "
    "name TEXT NOT NULL, path TEXT NOT NULL, referrer_source TEXT, visitor_id BIGINT NOT NULL, "
    "session_id BIGINT NOT NULL, browser TEXT, device TEXT, props TEXT)"
)


async def events_table(runtime: Runtime) -> None:
    """pixel_events as the contract defines it, unless its migration made it; empty."""
    await runtime.db.execute(EVENTS_DDL)
    await runtime.db.execute("DELETE FROM pixel_events")


@dataclass
class Event:
    ts: int
    path: str = "/"
    visitor: int = 1
    session: int | None = 1
    name: str = "pageview"
    source: str | None = None
    browser: str = "Chrome"
    device: str = "desktop"
    props: str | None = None


async def insert_events(runtime: Runtime, site_id: int, events: list[Event]) -> None:
    async with runtime.db.transaction() as tx:
        for e in events:
            await tx.execute(
                "INSERT INTO pixel_events (site_id, ts, name, path, referrer_source, visitor_id, "
                "session_id, browser, device, props) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    site_id,
                    e.ts,
                    e.name,
                    e.path,
                    e.source,
                    e.visitor,
                    e.session,
                    e.browser,
                    e.device,
                    e.props,
                ),
            )


async def other_tenant(runtime: Runtime, clock: ManualClock, tier: str = "free") -> dict[str, Any]:
    """A second user with their own workspace and a '*' key."""
    return await bootstrap(
        runtime.db,
        runtime.keys,
        runtime.plans,
        clock,
        name=f"Other {tier}",
        tier=tier,
        email=f"other-{tier}@example.test",
    )
