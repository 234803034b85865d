"""Privacy: no raw IP or user agent anywhere in the database, daily salts rotated on an
injectable clock (yesterday's kept, older deleted), keyed visitor ids, 30-minute sessions
(a session crossing midnight keeps its ids)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from ingest_support import close_ingest, event, flushed_rows, ingest, make_site, track

from conftest import Api, make_settings
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.pixel.privacy import DAY_MS, day_of, excluded, refuses_tracking
from core_api.runtime import Runtime

__all__ = ["close_ingest"]  # the fixture, used by the tests with a runtime

IP = "203.0.113.77"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 UniqueAgent/9.9"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    return make_settings(database_url, tmp_path, trusted_proxies=loopback)


async def all_text(runtime: Runtime) -> str:
    """Every row of every table, as text."""
    if runtime.db.dialect == "sqlite":
        tables = await runtime.db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        tables = await runtime.db.fetch_all(
            "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    dump = []
    for table in tables:
        rows = await runtime.db.fetch_all(f'SELECT * FROM "{table["name"]}"')
        dump.append(repr(rows))
    return "\n".join(dump)


@pytest.mark.usefixtures("close_ingest")
async def test_no_raw_ip_or_user_agent_is_stored(api: Api, runtime: Runtime) -> None:
    await make_site(api)
    bodies = [event(), event(user_agent=UA), {"event": "Signup", "url": "https://example.com/"}]
    for body in bodies:
        assert (await track(api, body, ua=UA, ip=IP)).json["tracked"] is True
    rows = await flushed_rows(runtime)
    assert len(rows) == 3
    dump = await all_text(runtime)
    for secret in (IP, "203.0.113", "UniqueAgent", "Gecko/20100101", "rv:133.0"):
        assert secret not in dump, secret
    assert "Firefox" in dump  # the parsed browser family is what is kept


@pytest.mark.usefixtures("close_ingest")
async def test_salts_rotate_daily_keeping_yesterday(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    await make_site(api)
    salts = ingest(runtime).salts

    async def stored_days() -> list[int]:
        rows = await runtime.db.fetch_all("SELECT day FROM pixel_salts ORDER BY day")
        return [int(r["day"]) for r in rows]

    today = day_of(clock.now_ms())
    assert (await track(api, event(), ip=IP)).json["tracked"]
    assert await stored_days() == [today, today + 1]  # tomorrow's made ahead
    first = dict(salts.keys)
    clock.advance(DAY_MS / 1000)
    await ingest(runtime).maintain()
    assert await stored_days() == [today, today + 1, today + 2]
    assert salts.keys[today] == first[today], "yesterday's kept as it was"
    clock.advance(DAY_MS / 1000)
    assert (await track(api, event(), ip=IP)).json["tracked"]  # tomorrow's, loaded ahead
    await ingest(runtime).maintain()
    assert await stored_days() == [today + 1, today + 2, today + 3]
    assert today not in salts.keys
    assert len(set(salts.keys.values())) == 3, "a new random salt each day"
    clock.advance(10 * DAY_MS / 1000)  # nothing loaded for this day: made on demand
    assert (await track(api, event(), ip=IP)).json["tracked"]
    assert await stored_days() == [today + 12, today + 13]  # no yesterday to keep


@pytest.mark.usefixtures("close_ingest")
async def test_visitor_ids_are_per_day_site_ip_and_agent(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    await make_site(api)
    await make_site(api, "other.test")

    async def visitor(url: str = "https://example.com/", ip: str = IP, ua: str = UA) -> Any:
        assert (await track(api, event(url), ip=ip, ua=ua)).json["tracked"]
        rows = await flushed_rows(runtime)
        await runtime.db.execute("DELETE FROM pixel_events")
        return rows[-1]["visitor_id"]

    base = await visitor()
    assert await visitor() == base
    assert await visitor(ip="203.0.113.78") != base
    assert await visitor(ua=UA.replace("133", "134")) != base
    assert await visitor("https://other.test/") != base
    clock.advance(DAY_MS / 1000)  # a day later (the session ended long ago): a new id
    assert await visitor() != base


@pytest.mark.usefixtures("close_ingest")
async def test_sessions_end_after_30_idle_minutes(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    await make_site(api)
    for gap in (0, 10, 29, 29, 31):  # minutes since the previous event
        clock.advance(gap * 60)
        assert (await track(api, event(f"https://example.com/{gap}"), ip=IP)).json["tracked"]
    rows = await flushed_rows(runtime)
    sessions = [r["session_id"] for r in rows]
    assert len({r["visitor_id"] for r in rows}) == 1
    assert sessions[0] == sessions[1] == sessions[2] == sessions[3]
    assert sessions[4] != sessions[3]


@pytest.mark.usefixtures("close_ingest")
async def test_a_session_crossing_midnight_keeps_its_ids(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    await make_site(api)
    clock.advance((DAY_MS - 10 * 60_000) / 1000)  # 23:50
    assert (await track(api, event("https://example.com/a"), ip=IP)).json["tracked"]
    clock.advance(20 * 60)  # 00:10 the next day
    assert (await track(api, event("https://example.com/b"), ip=IP)).json["tracked"]
    first, second = await flushed_rows(runtime)
    assert day_of(first["ts"]) + 1 == day_of(second["ts"])
    assert (first["visitor_id"], first["session_id"]) == (
        second["visitor_id"],
        second["session_id"],
    )


def test_excluded_path_rules() -> None:
    patterns = ("/admin", "/private/", "*.pdf", "/blog/*/draft")
    assert excluded("/admin", patterns) and excluded("/admin/x", patterns)
    assert not excluded("/administrator", patterns)
    assert excluded("/private/a", patterns) and excluded("/private", patterns)
    assert excluded("/files/report.pdf", patterns)
    assert excluded("/blog/1/draft", patterns) and not excluded("/blog/1/final", patterns)
    assert not excluded("/", ())


def test_dnt_and_gpc_headers() -> None:
    assert refuses_tracking("1", None) and refuses_tracking(None, "1")
    assert not refuses_tracking("0", None) and not refuses_tracking(None, None)
