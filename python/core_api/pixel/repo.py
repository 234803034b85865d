"""Pixel sites (and the stats day cache and site purges): the only place their SQL lives.
Every read of a workspace's sites is scoped to that workspace in SQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..storage.base import Database, Executor, Row, fetch_value
from ..web.listing import ListQuery, ListSpec
from .sites import Site

_COLUMNS = (
    "id, workspace_id, domain, name, enabled, features, sample_rate, allowed_origins, "
    "honor_dnt, excluded_paths, created_at, updated_at"
)
COLUMNS = ", ".join(f"s.{c}" for c in _COLUMNS.split(", "))

LIST_SPEC = ListSpec(
    sortable={
        "id": "id",
        "name": "name",
        "domain": "domain",
        "created_at": "created_at",
        "updated_at": "updated_at",
    },
    default_sort="id",
    fields=frozenset(
        {
            "id",
            "domain",
            "name",
            "enabled",
            "features",
            "sample_rate",
            "allowed_origins",
            "honor_dnt",
            "excluded_paths",
            "snippet",
            "created_at",
            "updated_at",
        }
    ),
    includes=frozenset({"workspace"}),
    statuses=frozenset({"enabled", "disabled"}),
    searchable=True,
)


@dataclass(frozen=True, slots=True)
class SiteRecord:
    id: int
    workspace_id: int
    domain: str
    name: str
    enabled: bool
    features: dict[str, bool]
    sample_rate: float
    allowed_origins: tuple[str, ...]
    honor_dnt: bool
    excluded_paths: tuple[str, ...]
    created_at: int
    updated_at: int

    def site(self) -> Site:
        return Site(
            id=self.id,
            workspace_id=self.workspace_id,
            domain=self.domain,
            enabled=self.enabled,
            features=dict(self.features),
            sample_rate=self.sample_rate,
            allowed_origins=self.allowed_origins,
            honor_dnt=self.honor_dnt,
            excluded_paths=self.excluded_paths,
            created_at=self.created_at,
        )


@dataclass(frozen=True, slots=True)
class SiteValues:
    """What a create or update writes (every settable column)."""

    domain: str
    name: str
    enabled: bool
    features: dict[str, bool]
    sample_rate: float
    allowed_origins: tuple[str, ...]
    honor_dnt: bool
    excluded_paths: tuple[str, ...]

    def params(self) -> list[Any]:
        return [
            self.domain,
            self.name,
            int(self.enabled),
            orjson.dumps(self.features).decode(),
            float(self.sample_rate),
            orjson.dumps(list(self.allowed_origins)).decode(),
            int(self.honor_dnt),
            orjson.dumps(list(self.excluded_paths)).decode(),
        ]


def _record(row: dict[str, Any]) -> SiteRecord:
    return SiteRecord(
        id=int(row["id"]),
        workspace_id=int(row["workspace_id"]),
        domain=row["domain"],
        name=row["name"],
        enabled=bool(row["enabled"]),
        features={k: bool(v) for k, v in orjson.loads(row["features"]).items()},
        sample_rate=float(row["sample_rate"]),
        allowed_origins=tuple(orjson.loads(row["allowed_origins"])),
        honor_dnt=bool(row["honor_dnt"]),
        excluded_paths=tuple(orjson.loads(row["excluded_paths"])),
        created_at=int(row["created_at"]),
        updated_at=int(row["updated_at"]),
    )


async def create(db: Executor, workspace_id: int, values: SiteValues, now: int) -> SiteRecord:
    """Raises IntegrityError when the domain is registered already (by any workspace)."""
    row = await db.fetch_one(
        "INSERT INTO pixel_sites (domain, name, enabled, features, sample_rate, "  # noqa: S608
        "allowed_origins, honor_dnt, excluded_paths, workspace_id, created_at, updated_at) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
        [*values.params(), workspace_id, now, now],
    )
    assert row is not None
    return _record(row)


async def update(
    db: Executor, workspace_id: int, site_id: int, values: SiteValues, now: int
) -> SiteRecord | None:
    """Raises IntegrityError when the new domain is taken; None when the site is gone."""
    row = await db.fetch_one(
        "UPDATE pixel_sites SET domain = ?, name = ?, enabled = ?, features = ?, "  # noqa: S608
        "sample_rate = ?, allowed_origins = ?, honor_dnt = ?, excluded_paths = ?, "
        f"updated_at = ? WHERE id = ? AND workspace_id = ? RETURNING {_COLUMNS}",
        [*values.params(), now, site_id, workspace_id],
    )
    return None if row is None else _record(row)


async def delete(db: Executor, workspace_id: int, site_id: int) -> bool:
    """The site and its cached stats; a trigger queues its events for the purge job."""
    changed = await db.execute(
        "DELETE FROM pixel_sites WHERE id = ? AND workspace_id = ?", (site_id, workspace_id)
    )
    return changed == 1


async def get(db: Executor, workspace_id: int, site_id: int) -> SiteRecord | None:
    row = await db.fetch_one(
        f"SELECT {_COLUMNS} FROM pixel_sites WHERE id = ? AND workspace_id = ?",  # noqa: S608
        (site_id, workspace_id),
    )
    return None if row is None else _record(row)


async def get_by_id(db: Executor, site_id: int) -> SiteRecord | None:
    """Any workspace's site: for the pixel's public paths only (never a tenant read)."""
    row = await db.fetch_one(
        f"SELECT {_COLUMNS} FROM pixel_sites WHERE id = ?",  # noqa: S608
        (site_id,),
    )
    return None if row is None else _record(row)


async def get_by_domains(db: Executor, domains: list[str]) -> list[SiteRecord]:
    marks = ", ".join("?" for _ in domains)
    rows = await db.fetch_all(
        f"SELECT {_COLUMNS} FROM pixel_sites WHERE domain IN ({marks})",  # noqa: S608
        domains,
    )
    return [_record(r) for r in rows]


def _scope(workspace_id: int, query: ListQuery) -> tuple[str, list[Any]]:
    conditions, params = query.where("s")
    conditions[:0] = ["s.workspace_id = ?"]
    params[:0] = [workspace_id]
    if query.status == "enabled":
        conditions.append("s.enabled = 1")
    elif query.status == "disabled":
        conditions.append("s.enabled = 0")
    if query.search:
        conditions.append("(LOWER(s.name) LIKE ? OR s.domain LIKE ?)")
        params += [query.search_pattern, query.search_pattern]
    return "WHERE " + " AND ".join(f"({c})" for c in conditions), params


async def page_in_workspace(db: Executor, workspace_id: int, query: ListQuery) -> list[SiteRecord]:
    where, params = _scope(workspace_id, query)
    rows = await db.fetch_all(
        f"SELECT {COLUMNS} FROM pixel_sites s {where} "  # noqa: S608
        f"ORDER BY {query.order_by(LIST_SPEC, 's')} LIMIT ? OFFSET ?",
        [*params, query.per_page, query.offset],
    )
    return [_record(r) for r in rows]


async def count_in_workspace(db: Executor, workspace_id: int, query: ListQuery) -> int:
    where, params = _scope(workspace_id, query)
    value = await fetch_value(db, f"SELECT COUNT(*) AS n FROM pixel_sites s {where}", params)  # noqa: S608
    return int(value or 0)


# --- stats day cache ---------------------------------------------------------------------


async def cached_days(
    db: Executor, site_id: int, timezone: str, first: str, last: str
) -> dict[str, tuple[str, int]]:
    """Stored days for ``first``..``last`` (ISO dates, inclusive): (payload JSON text,
    computed_at)."""
    rows = await db.fetch_all(
        "SELECT day, payload, computed_at FROM pixel_stats_days "
        "WHERE site_id = ? AND timezone = ? AND day >= ? AND day <= ?",
        (site_id, timezone, first, last),
    )
    return {r["day"]: (r["payload"], int(r["computed_at"])) for r in rows}


async def store_day(
    db: Executor, site_id: int, timezone: str, day: str, payload: str, now: int
) -> None:
    """Insert or replace a computed day (a site deleted meanwhile stores nothing)."""
    await db.execute(
        "INSERT INTO pixel_stats_days (site_id, timezone, day, payload, computed_at) "
        "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM pixel_sites WHERE id = ?) "
        "ON CONFLICT (site_id, timezone, day) DO UPDATE "
        "SET payload = excluded.payload, computed_at = excluded.computed_at",
        (site_id, timezone, day, payload, now, site_id),
    )


# --- purges of deleted sites' events -------------------------------------------------------


async def pending_purges(db: Executor, limit: int) -> list[int]:
    rows = await db.fetch_all(
        "SELECT site_id FROM pixel_site_purges ORDER BY deleted_at LIMIT ?", (limit,)
    )
    return [int(r["site_id"]) for r in rows]


async def purge_events(db: Database, site_id: int, batch: int) -> int:
    """Delete up to ``batch`` of a deleted site's events (bounded: no long lock on a big
    table); when none are left, the purge row too. Returns the events deleted."""
    deleted = await db.execute(
        "DELETE FROM pixel_events WHERE site_id = ? AND ts IN "
        "(SELECT ts FROM pixel_events WHERE site_id = ? ORDER BY ts LIMIT ?)",
        (site_id, site_id, batch),
    )
    if deleted < batch:
        await db.execute(
            "DELETE FROM pixel_site_purges WHERE site_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM pixel_events WHERE site_id = ?)",
            (site_id, site_id),
        )
    return deleted


# --- stats over pixel_events --------------------------------------------------------------


async def events_between(db: Executor, site_id: int, start: int, end: int) -> list[Row]:
    """A site's events with ``start <= ts < end`` (walks the (site_id, ts) index)."""
    return await db.fetch_all(
        "SELECT ts, name, path, referrer_source, visitor_id, session_id, browser, device "
        "FROM pixel_events WHERE site_id = ? AND ts >= ? AND ts < ?",
        (site_id, start, end),
    )


_RANGE = "site_id = ? AND ts >= ? AND ts < ?"


async def day_sessions(db: Executor, site_id: int, start: int, end: int) -> list[Row]:
    """A finished day's sessions: visitor, first and last event, pageviews, events, and
    the greatest referrer source, browser and device seen (what :class:`DayState` keeps)."""
    return await db.fetch_all(
        "SELECT visitor_id, MIN(ts) AS first_ts, MAX(ts) AS last_ts, "  # noqa: S608
        "SUM(CASE WHEN name = 'pageview' THEN 1 ELSE 0 END) AS pageviews, "
        "COUNT(*) AS events, MAX(referrer_source) AS source, MAX(browser) AS browser, "
        f"MAX(device) AS device FROM pixel_events WHERE {_RANGE} "
        "GROUP BY session_id, visitor_id",
        (site_id, start, end),
    )


async def day_pages(db: Executor, site_id: int, start: int, end: int, limit: int) -> list[Row]:
    return await db.fetch_all(
        "SELECT path, COUNT(*) AS pageviews, COUNT(DISTINCT visitor_id) AS visitors "  # noqa: S608
        f"FROM pixel_events WHERE {_RANGE} AND name = 'pageview' "
        "GROUP BY path ORDER BY pageviews DESC, path LIMIT ?",
        (site_id, start, end, limit),
    )


async def day_custom_events(
    db: Executor, site_id: int, start: int, end: int, limit: int
) -> list[Row]:
    return await db.fetch_all(
        "SELECT name, COUNT(*) AS count, COUNT(DISTINCT visitor_id) AS visitors "  # noqa: S608
        f"FROM pixel_events WHERE {_RANGE} AND name <> 'pageview' "
        "GROUP BY name ORDER BY count DESC, name LIMIT ?",
        (site_id, start, end, limit),
    )


async def day_hours(db: Executor, site_id: int, start: int, end: int, offset: int) -> list[Row]:
    """Pageviews and visitors per local hour: ``offset`` (the zone's UTC offset at the
    day's start, ms) aligns the buckets; a DST shift of whole hours keeps them aligned.
    (GROUP BY 1: PostgreSQL does not match two bound copies of one expression.)"""
    return await db.fetch_all(
        "SELECT (ts + ?) / 3600000 AS bucket, COUNT(*) AS pageviews, "  # noqa: S608
        f"COUNT(DISTINCT visitor_id) AS visitors FROM pixel_events WHERE {_RANGE} "
        "AND name = 'pageview' GROUP BY 1",
        (offset, site_id, start, end),
    )


async def count_between(db: Executor, site_id: int, start: int, end: int) -> int:
    value = await fetch_value(
        db,
        "SELECT COUNT(*) AS n FROM pixel_events WHERE site_id = ? AND ts >= ? AND ts < ?",
        (site_id, start, end),
    )
    return int(value or 0)


async def sites_with_settings(db: Executor, after_id: int, limit: int) -> list[tuple[int, str]]:
    """(site id, its workspace's settings JSON), in id order from ``after_id``."""
    rows = await db.fetch_all(
        "SELECT s.id, w.settings FROM pixel_sites s JOIN workspaces w ON w.id = s.workspace_id "
        "WHERE s.id > ? ORDER BY s.id LIMIT ?",
        (after_id, limit),
    )
    return [(int(r["id"]), r["settings"]) for r in rows]
