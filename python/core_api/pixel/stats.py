"""Site stats over a date range, in the workspace's timezone.

A range is read day by day (local days). A day that is over is computed once from
``pixel_events`` and kept in ``pixel_stats_days`` (keyed by timezone too); today is
computed live. So a query costs one read of the stored days plus today's events, whatever
the site's history. Visitor ids come from a daily salt, so a visitor is one per day: a
range's unique visitors are the sum of its days' (what the salt allows anyone to know).

A day stored within :data:`RECHECK_MS` of its end is computed again once that much time
has passed, so that events written late (after a database outage, from the ingest
buffer) are counted; later than that they are not (docs/pixel.md).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from ..clock import Clock
from ..storage import Database
from . import repo

DAY_PAGES = 1000  # pages kept per stored day (a range's top pages merge these)
DAY_EVENTS = 100  # custom event names kept per stored day
RECHECK_MS = 3_600_000
MAX_DAYS = 366
MAX_HOURLY_DAYS = 31
HOUR_MS = 3_600_000


def zone(name: str | None) -> tuple[str, ZoneInfo]:
    """The workspace's zone; UTC when unset or not an IANA zone name."""
    if name:
        try:
            return name, ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return "UTC", ZoneInfo("UTC")


def timezone_setting(settings_json: str) -> str | None:
    """The ``timezone`` of a workspace's settings (JSON object text)."""
    value = orjson.loads(settings_json).get("timezone")
    return value if isinstance(value, str) else None


def day_bounds(day: dt.date, tz: ZoneInfo) -> tuple[int, int, int]:
    """(start ms, end ms, UTC offset ms at the start) of a local day."""
    start = dt.datetime.combine(day, dt.time(), tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz)
    offset = start.utcoffset() or dt.timedelta()
    return (
        int(start.timestamp() * 1000),
        int(end.timestamp() * 1000),
        int(offset.total_seconds() * 1000),
    )


async def compute_day(db: Database, site_id: int, day: dt.date, tz: ZoneInfo) -> dict[str, Any]:
    start, end, offset = day_bounds(day, tz)
    sessions = await repo.day_sessions(db, site_id, start, end)
    pages = await repo.day_pages(db, site_id, start, end, DAY_PAGES)
    custom = await repo.day_custom_events(db, site_id, start, end, DAY_EVENTS)
    hours = await repo.day_hours(db, site_id, start, end, offset)
    visitors: set[int] = set()
    sources: dict[str | None, list[Any]] = {}
    browsers: dict[str, set[int]] = {}
    devices: dict[str, set[int]] = {}
    pageviews = bounces = duration = events = 0
    for s in sessions:
        visitor = s["visitor_id"]
        visitors.add(visitor)
        pageviews += int(s["pageviews"])
        events += int(s["events"])
        bounces += int(s["pageviews"]) <= 1
        duration += int(s["last_ts"]) - int(s["first_ts"])
        entry = sources.setdefault(s["source"], [set(), 0])
        entry[0].add(visitor)
        entry[1] += 1
        browsers.setdefault(s["browser"] or "Unknown", set()).add(visitor)
        devices.setdefault(s["device"] or "other", set()).add(visitor)
    return {
        "pageviews": pageviews,
        "events": events - pageviews,
        "visitors": len(visitors),
        "sessions": len(sessions),
        "bounces": bounces,
        "duration_ms": duration,
        "pages": [[r["path"], int(r["pageviews"]), int(r["visitors"])] for r in pages],
        "sources": [[k, len(v[0]), v[1]] for k, v in sources.items()],
        "browsers": [[k, len(v)] for k, v in browsers.items()],
        "devices": [[k, len(v)] for k, v in devices.items()],
        "custom": [[r["name"], int(r["count"]), int(r["visitors"])] for r in custom],
        "hours": sorted(
            [int(r["bucket"]) * HOUR_MS - offset, int(r["pageviews"]), int(r["visitors"])]
            for r in hours
        ),
    }


@dataclass(frozen=True, slots=True)
class StatsQuery:
    first: dt.date
    last: dt.date
    interval: str  # "hour" | "day"
    limit: int


class PixelStats:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db, self.clock = db, clock

    def today(self, tz: ZoneInfo) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock.now_ms() / 1000, tz).date()

    async def days(
        self, site_id: int, tz_name: str, tz: ZoneInfo, first: dt.date, last: dt.date
    ) -> list[tuple[dt.date, dict[str, Any]]]:
        """Each local day's figures: stored, computed and stored, or (today) live."""
        now = self.clock.now_ms()
        stored = await repo.cached_days(
            self.db, site_id, tz_name, first.isoformat(), last.isoformat()
        )
        out = []
        day = first
        while day <= last:
            start, end, _ = day_bounds(day, tz)
            cached = stored.get(day.isoformat())
            if start > now:
                payload: dict[str, Any] | None = None  # the future: nothing yet
            elif cached is not None and not (cached[1] < end + RECHECK_MS <= now):
                payload = orjson.loads(cached[0])
            else:
                payload = await compute_day(self.db, site_id, day, tz)
                if end <= now:
                    await repo.store_day(
                        self.db,
                        site_id,
                        tz_name,
                        day.isoformat(),
                        orjson.dumps(payload).decode(),
                        now,
                    )
            if payload is not None:
                out.append((day, payload))
            day += dt.timedelta(days=1)
        return out

    async def report(
        self, site_id: int, tz_name: str, tz: ZoneInfo, query: StatsQuery
    ) -> dict[str, Any]:
        days = await self.days(site_id, tz_name, tz, query.first, query.last)
        return summarize(days, tz_name, tz, query)


def _top(counter: Counter[Any], limit: int) -> list[tuple[Any, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))[:limit]


def summarize(
    days: list[tuple[dt.date, dict[str, Any]]], tz_name: str, tz: ZoneInfo, query: StatsQuery
) -> dict[str, Any]:
    totals = Counter[str]()
    page_views, page_visitors = Counter[str](), Counter[str]()
    source_visitors, source_sessions = Counter[str | None](), Counter[str | None]()
    browsers, devices = Counter[str](), Counter[str]()
    event_counts, event_visitors = Counter[str](), Counter[str]()
    by_day = {}
    hours: list[list[int]] = []
    for day, p in days:
        for key in ("pageviews", "events", "visitors", "sessions", "bounces", "duration_ms"):
            totals[key] += p[key]
        for path, views, visitors in p["pages"]:
            page_views[path] += views
            page_visitors[path] += visitors
        for source, visitors, sessions in p["sources"]:
            source_visitors[source] += visitors
            source_sessions[source] += sessions
        for name, visitors in p["browsers"]:
            browsers[name] += visitors
        for name, visitors in p["devices"]:
            devices[name] += visitors
        for name, count, visitors in p["custom"]:
            event_counts[name] += count
            event_visitors[name] += visitors
        by_day[day] = p
        hours.extend(p["hours"])
    sessions = totals["sessions"]
    limit = query.limit
    return {
        "timezone": tz_name,
        "from": query.first.isoformat(),
        "to": query.last.isoformat(),
        "interval": query.interval,
        "totals": {
            "pageviews": totals["pageviews"],
            "visitors": totals["visitors"],
            "sessions": sessions,
            "bounce_rate": round(totals["bounces"] / sessions, 4) if sessions else 0.0,
            "visit_duration": round(totals["duration_ms"] / sessions / 1000, 1)
            if sessions
            else 0.0,
            "events": totals["events"],
        },
        "top_pages": [
            {"path": path, "pageviews": views, "visitors": page_visitors[path]}
            for path, views in _top(page_views, limit)
        ],
        "top_referrers": [
            {"source": source, "visitors": visitors, "sessions": source_sessions[source]}
            for source, visitors in _top(source_visitors, limit)
        ],
        "browsers": [{"name": k, "visitors": v} for k, v in _top(browsers, limit)],
        "devices": [{"name": k, "visitors": v} for k, v in _top(devices, limit)],
        "events": [
            {"name": name, "count": count, "visitors": event_visitors[name]}
            for name, count in _top(event_counts, limit)
        ],
        "series": _series(by_day, sorted(hours), tz, query),
    }


def _series(
    by_day: dict[dt.date, dict[str, Any]], hours: list[list[int]], tz: ZoneInfo, query: StatsQuery
) -> list[dict[str, Any]]:
    """Every bucket of the range, empty ones included (a chart needs no gap filling)."""
    if query.interval == "day":
        out, day = [], query.first
        while day <= query.last:
            p = by_day.get(day)
            out.append(
                {
                    "date": day.isoformat(),
                    "pageviews": p["pageviews"] if p else 0,
                    "visitors": p["visitors"] if p else 0,
                    "sessions": p["sessions"] if p else 0,
                }
            )
            day += dt.timedelta(days=1)
        return out
    filled = {start: (views, visitors) for start, views, visitors in hours}
    start = day_bounds(query.first, tz)[0]
    end = day_bounds(query.last, tz)[1]
    out = []
    for hour in range(start, end, HOUR_MS):
        views, visitors = filled.get(hour, (0, 0))
        moment = dt.datetime.fromtimestamp(hour / 1000, tz)
        out.append({"start": moment.isoformat(), "pageviews": views, "visitors": visitors})
    return out
