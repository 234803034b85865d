"""GET /api/v1/pixel/stats: figures equal the events, in the workspace's timezone; days
that are over are stored and reused; late events within the recheck window count."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any
from zoneinfo import ZoneInfo

from pixel_sites_support import SITES, STATS, Event, events_table, insert_events

from conftest import Api
from core_api.clock import ManualClock
from core_api.pixel import maintenance
from core_api.pixel.stats import LIVE_VERIFY_MS, compute_day, fold_day
from core_api.runtime import Runtime

NY = ZoneInfo("America/New_York")


def at(text: str, tz: ZoneInfo = NY) -> int:
    """Epoch ms of a local wall time ``YYYY-MM-DD HH:MM``."""
    return int(dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=tz).timestamp() * 1000)


async def setup(api: Api, runtime: Runtime, boot: dict[str, Any], tz: str) -> int:
    await events_table(runtime)
    workspace = boot["workspace"]["id"]
    patched = await api.patch(
        f"/api/v1/workspaces/{workspace}", json={"settings": {"timezone": tz}}
    )
    assert patched.status == 200, patched.json
    return int((await api.post(SITES, json={"domain": "example.com"})).json["data"]["id"])


async def stats(api: Api, **params: str) -> dict[str, Any]:
    result = await api.get(STATS, params=params)
    assert result.status == 200, result.json
    return dict(result.json["data"])


SCENARIO = [
    # visitor 1: three pageviews... two, and a custom event, in one session from Google
    Event(ts=at("2026-01-08 08:00"), path="/", visitor=1, session=11, source="google.com"),
    Event(ts=at("2026-01-08 08:05"), path="/pricing", visitor=1, session=11),
    Event(ts=at("2026-01-08 08:06"), path="/pricing", visitor=1, session=11, name="Signup"),
    # visitor 2: one pageview late in the local day (already the 9th in UTC): a bounce
    Event(ts=at("2026-01-08 23:30"), visitor=2, session=21, browser="Firefox", device="mobile"),
    # visitor 3: today, live
    Event(
        ts=at("2026-01-10 09:00"),
        path="/blog",
        visitor=3,
        session=31,
        source="news.ycombinator.com",
        browser="Safari",
        device="tablet",
    ),
    # outside the range (the 7th, local)
    Event(ts=at("2026-01-07 23:59"), visitor=9, session=91),
]


async def test_figures_equal_the_events(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    site = await setup(api, runtime, boot, "America/New_York")
    clock.advance((at("2026-01-10 10:00") - clock.now_ms()) / 1000)
    await insert_events(runtime, site, SCENARIO)
    other = (await api.post(SITES, json={"domain": "other.com"})).json["data"]["id"]
    await insert_events(runtime, other, [Event(ts=at("2026-01-08 09:00"), visitor=5, session=5)])

    data = await stats(api, site_id=str(site), **{"from": "2026-01-08", "to": "2026-01-10"})
    assert data["site"] == {"id": site, "domain": "example.com"}
    assert data["timezone"] == "America/New_York"
    assert (data["from"], data["to"], data["interval"]) == ("2026-01-08", "2026-01-10", "day")
    assert data["totals"] == {
        "pageviews": 4,
        "visitors": 3,
        "sessions": 3,
        "bounce_rate": 0.6667,
        "visit_duration": 120.0,  # (360 s + 0 + 0) / 3
        "events": 1,
    }
    assert data["top_pages"] == [
        {"path": "/", "pageviews": 2, "visitors": 2},
        {"path": "/blog", "pageviews": 1, "visitors": 1},
        {"path": "/pricing", "pageviews": 1, "visitors": 1},
    ]
    assert data["top_referrers"] == [
        {"source": None, "visitors": 1, "sessions": 1},
        {"source": "google.com", "visitors": 1, "sessions": 1},
        {"source": "news.ycombinator.com", "visitors": 1, "sessions": 1},
    ]
    assert data["browsers"] == [
        {"name": "Chrome", "visitors": 1},
        {"name": "Firefox", "visitors": 1},
        {"name": "Safari", "visitors": 1},
    ]
    assert data["devices"] == [
        {"name": "desktop", "visitors": 1},
        {"name": "mobile", "visitors": 1},
        {"name": "tablet", "visitors": 1},
    ]
    assert data["events"] == [{"name": "Signup", "count": 1, "visitors": 1}]
    assert data["series"] == [
        {"date": "2026-01-08", "pageviews": 3, "visitors": 2, "sessions": 2},
        {"date": "2026-01-09", "pageviews": 0, "visitors": 0, "sessions": 0},
        {"date": "2026-01-10", "pageviews": 1, "visitors": 1, "sessions": 1},
    ]
    top = await stats(
        api, site_id=str(site), limit="1", **{"from": "2026-01-08", "to": "2026-01-10"}
    )
    assert [p["path"] for p in top["top_pages"]] == ["/"]

    hourly = await stats(api, site_id=str(site), **{"from": "2026-01-08", "to": "2026-01-08"})
    assert hourly["interval"] == "hour"
    series = hourly["series"]
    assert len(series) == 24
    assert series[0]["start"] == "2026-01-08T00:00:00-05:00"
    busy = {s["start"][11:16]: (s["pageviews"], s["visitors"]) for s in series if s["pageviews"]}
    assert busy == {"08:00": (2, 1), "23:00": (1, 1)}


async def test_default_range_is_the_last_30_days(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    site = await setup(api, runtime, boot, "America/New_York")
    clock.advance((at("2026-01-10 10:00") - clock.now_ms()) / 1000)
    await insert_events(runtime, site, SCENARIO)
    data = await stats(api, site_id=str(site))
    assert (data["from"], data["to"]) == ("2025-12-12", "2026-01-10")
    assert len(data["series"]) == 30
    assert data["totals"]["pageviews"] == 5  # the 7th too


async def test_past_days_are_stored_and_today_is_live(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    site = await setup(api, runtime, boot, "America/New_York")
    clock.advance((at("2026-01-10 10:00") - clock.now_ms()) / 1000)
    await insert_events(runtime, site, SCENARIO)
    span = {"from": "2026-01-08", "to": "2026-01-10"}
    first = await stats(api, site_id=str(site), **span)
    stored = await runtime.db.fetch_all(
        "SELECT day, timezone FROM pixel_stats_days WHERE site_id = ? ORDER BY day", (site,)
    )
    assert [(r["day"], r["timezone"]) for r in stored] == [
        ("2026-01-08", "America/New_York"),
        ("2026-01-09", "America/New_York"),
    ]
    # The stored days answer without the events (proof they are read, not recomputed)...
    await runtime.db.execute("DELETE FROM pixel_events WHERE ts < ?", (at("2026-01-10 00:00"),))
    assert (await stats(api, site_id=str(site), **span))["totals"] == first["totals"]
    # ...and today is live: the newest events show at once, and keep showing once folded.
    now = clock.now_ms()
    await insert_events(runtime, site, [Event(ts=now - 1000, visitor=4, session=41)])
    assert (await stats(api, site_id=str(site), **span))["totals"]["pageviews"] == 5
    clock.advance(60)
    assert (await stats(api, site_id=str(site), **span))["totals"]["pageviews"] == 5
    await insert_events(runtime, site, [Event(ts=clock.now_ms() - 2000, visitor=4, session=41)])
    live = (await stats(api, site_id=str(site), **span))["totals"]
    assert (live["pageviews"], live["visitors"], live["sessions"]) == (6, 4, 4)
    # An event written long after its time (an outage) shows once today is verified.
    await insert_events(runtime, site, [Event(ts=at("2026-01-10 09:30"), visitor=5, session=51)])
    assert (await stats(api, site_id=str(site), **span))["totals"]["pageviews"] == 6
    clock.advance(LIVE_VERIFY_MS / 1000)
    assert (await stats(api, site_id=str(site), **span))["totals"]["pageviews"] == 7
    # Another timezone is another set of days.
    await api.patch(
        f"/api/v1/workspaces/{boot['workspace']['id']}", json={"settings": {"timezone": "UTC"}}
    )
    utc = await stats(api, site_id=str(site), **span)
    assert utc["timezone"] == "UTC" and utc["totals"]["pageviews"] == 4  # what is left


async def test_late_events_within_the_recheck_window_count(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    site = await setup(api, runtime, boot, "America/New_York")
    clock.advance((at("2026-01-09 00:10") - clock.now_ms()) / 1000)
    await insert_events(runtime, site, SCENARIO[:2])
    day = {"from": "2026-01-08", "to": "2026-01-08"}
    assert (await stats(api, site_id=str(site), **day))["totals"]["pageviews"] == 2
    # Written late (a database outage delayed the ingest buffer's flush).
    await insert_events(runtime, site, [SCENARIO[3]])
    assert (await stats(api, site_id=str(site), **day))["totals"]["pageviews"] == 2  # stored
    clock.advance(3600)
    assert (await stats(api, site_id=str(site), **day))["totals"]["pageviews"] == 3


async def test_store_yesterday_job(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    site = await setup(api, runtime, boot, "America/New_York")
    clock.advance((at("2026-01-09 03:00") - clock.now_ms()) / 1000)
    await insert_events(runtime, site, SCENARIO[:4])
    assert (
        await maintenance.store_yesterday(runtime) == "stored yesterday's stats of 1 pixel site(s)"
    )
    rows = await runtime.db.fetch_all("SELECT day FROM pixel_stats_days WHERE site_id = ?", (site,))
    assert [r["day"] for r in rows] == ["2026-01-08"]
    assert await maintenance.store_yesterday(runtime) is None


async def test_dst_day_has_23_hours(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    site = await setup(api, runtime, boot, "America/New_York")
    clock.advance((at("2026-03-20 12:00") - clock.now_ms()) / 1000)
    await insert_events(runtime, site, [Event(ts=at("2026-03-08 04:30"), visitor=1, session=1)])
    data = await stats(api, site_id=str(site), **{"from": "2026-03-08", "to": "2026-03-08"})
    assert len(data["series"]) == 23
    busy = [s for s in data["series"] if s["pageviews"]]
    assert busy == [{"start": "2026-03-08T04:00:00-04:00", "pageviews": 1, "visitors": 1}]


async def test_half_hour_zone_and_unknown_zone(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    india = ZoneInfo("Asia/Kolkata")
    site = await setup(api, runtime, boot, "Asia/Kolkata")
    clock.advance((at("2026-01-10 12:00", india) - clock.now_ms()) / 1000)
    await insert_events(
        runtime,
        site,
        [Event(ts=at("2026-01-09 00:10", india)), Event(ts=at("2026-01-09 23:50", india))],
    )
    data = await stats(api, site_id=str(site), **{"from": "2026-01-09", "to": "2026-01-09"})
    busy = [s["start"] for s in data["series"] if s["pageviews"]]
    assert busy == ["2026-01-09T00:00:00+05:30", "2026-01-09T23:00:00+05:30"]
    await api.patch(
        f"/api/v1/workspaces/{boot['workspace']['id']}",
        json={"settings": {"timezone": "Mars/Base"}},
    )
    assert (await stats(api, site_id=str(site)))["timezone"] == "UTC"


async def test_validation(api: Api, runtime: Runtime, boot: dict[str, Any]) -> None:
    site = await setup(api, runtime, boot, "UTC")
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "site_id"),
        ({"site_id": "abc"}, "site_id"),
        ({"site_id": "0"}, "site_id"),
        ({"site_id": str(site), "from": "2026-13-01"}, "from"),
        ({"site_id": str(site), "to": "yesterday"}, "to"),
        ({"site_id": str(site), "to": "9999-12-31"}, "to"),  # its end overflowed: a 500
        ({"site_id": str(site), "from": "9999-12-31", "to": "9999-12-31"}, "from"),
        ({"site_id": str(site), "from": "1969-12-31", "to": "1970-01-01"}, "from"),
        ({"site_id": str(site), "from": "2026-01-10", "to": "2026-01-01"}, "from"),
        ({"site_id": str(site), "from": "2024-01-01", "to": "2026-01-01"}, "from"),
        (
            {"site_id": str(site), "from": "2025-01-01", "to": "2025-03-01", "interval": "hour"},
            "interval",
        ),
        ({"site_id": str(site), "interval": "week"}, "interval"),
        ({"site_id": str(site), "limit": "0"}, "limit"),
        ({"site_id": str(site), "limit": "101"}, "limit"),
        ({"site_id": str(site), "metric": "x"}, "metric"),
    ]
    for params, field in cases:
        result = await api.get(STATS, params=params)
        assert result.status == 422, (params, result.json)
        assert field in result.json["errors"], (params, result.json)
    assert (await api.get(STATS, params={"site_id": "424242"})).status == 404


async def test_concurrent_queries_count_today_once(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    site = await setup(api, runtime, boot, "America/New_York")
    clock.advance((at("2026-01-10 10:00") - clock.now_ms()) / 1000)
    now = clock.now_ms()
    events = [Event(ts=now - i * 600_000, visitor=i % 7, session=i % 11) for i in range(40)]
    events += [Event(ts=now - 1000, visitor=99, session=99)]  # not settled yet
    await insert_events(runtime, site, events)
    span = {"site_id": str(site), "from": "2026-01-10", "to": "2026-01-10"}
    results = await asyncio.gather(*(api.get(STATS, params=span) for _ in range(6)))
    for result in results:
        assert result.status == 200
        assert result.json["data"]["totals"]["pageviews"] == 41, result.json["data"]["totals"]
    clock.advance(10)
    again = await asyncio.gather(*(api.get(STATS, params=span) for _ in range(6)))
    assert {r.json["data"]["totals"]["pageviews"] for r in again} == {41}


async def test_days_before_the_site_are_not_read(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    clock.advance((at("2026-01-20 12:00") - clock.now_ms()) / 1000)
    site = await setup(api, runtime, boot, "America/New_York")  # created on the 20th
    clock.advance(3 * 86400)
    data = await stats(api, site_id=str(site), **{"from": "2026-01-01", "to": "2026-01-23"})
    assert len(data["series"]) == 23
    stored = await runtime.db.fetch_all(
        "SELECT day FROM pixel_stats_days WHERE site_id = ? ORDER BY day", (site,)
    )
    assert [r["day"] for r in stored] == ["2026-01-20", "2026-01-21", "2026-01-22"]


async def test_stored_and_folded_days_agree(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    """A finished day is aggregated by the database, today is folded from its events: on
    the same events both give the same figures (NULL sessions, several sources in one
    session, custom events and hours included)."""
    site = await setup(api, runtime, boot, "America/New_York")
    clock.advance((at("2026-01-12 12:00") - clock.now_ms()) / 1000)
    rng = random.Random(7)
    events = [
        Event(
            ts=at("2026-01-10 00:00") + rng.randrange(86_400_000),
            path=rng.choice(["/", "/a", "/b", "/c/d", "/e?"]),
            visitor=rng.randrange(40),
            session=rng.choice([None, *range(60)]),
            name=rng.choice(["pageview"] * 5 + ["Signup", "Buy"]),
            source=rng.choice([None, None, "google.com", "bing.com", "t.co"]),
            browser=rng.choice(["Chrome", "Firefox", "Safari"]),
            device=rng.choice(["desktop", "mobile", "tablet", "other"]),
        )
        for _ in range(600)
    ]
    await insert_events(runtime, site, events)
    day = dt.date(2026, 1, 10)
    stored = await compute_day(runtime.db, site, day, NY)
    folded = await fold_day(runtime.db, site, day, NY)

    def canonical(payload: dict[str, Any]) -> dict[str, Any]:
        return {
            k: sorted(v, key=lambda item: [str(x) for x in item]) if isinstance(v, list) else v
            for k, v in payload.items()
        }

    assert canonical(stored) == canonical(folded)
    assert stored["pageviews"] + stored["events"] == 600
