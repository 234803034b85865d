"""POST /api/v1/pixel/track and GET /api/v1/pixel/track.gif on both backends: what is
stored, what is refused (and that a refusal stores nothing), bots, sampling, DNT/GPC,
excluded paths, features, CORS, the per-IP limit."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import orjson
import pytest
from ingest_support import (
    CHROME,
    GIF,
    IPHONE,
    TRACK,
    close_ingest,
    event,
    flushed_rows,
    ingest,
    make_site,
    track,
)

from conftest import Api, make_settings, serving
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.pixel import ingest_repo
from core_api.pixel.privacy import day_of
from core_api.runtime import Runtime
from core_api.storage import fetch_value

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
pytestmark = pytest.mark.usefixtures("close_ingest")
__all__ = ["close_ingest"]  # the fixture, imported for its use above


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Behind a "proxy" on loopback, so that X-Forwarded-For gives each test client an IP.
    return make_settings(database_url, tmp_path, trusted_proxies=LOOPBACK)


async def count(runtime: Runtime) -> int:
    await ingest(runtime).flush()
    return int(await fetch_value(runtime.db, "SELECT COUNT(*) FROM pixel_events"))


async def test_a_pageview_is_stored_with_derived_fields_only(api: Api, runtime: Runtime) -> None:
    site = await make_site(api)
    body = event(
        "https://www.example.com/blog/post?utm=x#section",
        referrer="https://www.google.com/search?q=1",
        properties={"title": "Post", "n": 3},
    )
    got = await track(api, body, ua=IPHONE, headers={"Origin": "https://www.example.com"})
    assert got.status == 200, got.json
    assert got.json == {"tracked": True}
    assert got.header("access-control-allow-origin") == "https://www.example.com"
    assert got.header("cache-control") == "no-store"
    assert got.header("x-ratelimit-limit") == "300"
    [row] = await flushed_rows(runtime)
    assert row["site_id"] == site["id"]
    assert row["ts"] == runtime.clock.now_ms()
    assert (row["name"], row["path"]) == ("pageview", "/blog/post")
    assert row["referrer_source"] == "google.com"
    assert (row["browser"], row["device"]) == ("Safari", "mobile")
    assert orjson.loads(row["props"]) == {"title": "Post", "n": 3}
    assert isinstance(row["visitor_id"], int) and isinstance(row["session_id"], int)


async def test_custom_events_hash_routes_and_internal_referrers(api: Api, runtime: Runtime) -> None:
    await make_site(api)
    body = event("https://example.com/#/settings", referrer="https://example.com/")
    assert (await track(api, body)).status == 200
    custom = {"event": "Signup", "url": "https://example.com/join", "properties": {"plan": "pro"}}
    assert (await track(api, custom)).status == 200
    rows = await flushed_rows(runtime)
    assert [(r["name"], r["path"], r["referrer_source"]) for r in rows] == [
        ("pageview", "/#/settings", None),
        ("Signup", "/join", None),
    ]
    assert rows[0]["browser"] == "Chrome" and rows[0]["device"] == "desktop"
    assert rows[0]["visitor_id"] == rows[1]["visitor_id"]
    assert rows[0]["session_id"] == rows[1]["session_id"]


async def test_send_beacon_text_plain_body(api: Api, runtime: Runtime) -> None:
    await make_site(api)
    got = await api.post(
        TRACK,
        body=orjson.dumps(event()),
        headers={"Content-Type": "text/plain;charset=UTF-8", "User-Agent": CHROME},
        auth=False,
    )
    assert got.status == 200, got.json
    assert len(await flushed_rows(runtime)) == 1


async def test_gif_variant_uses_the_referer_as_page(api: Api, runtime: Runtime) -> None:
    await make_site(api)
    got = await api.conductor.simulate_get(
        GIF,
        headers={"User-Agent": CHROME, "Referer": "https://example.com/no-js"},
        params={"_": "123"},
    )
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/gif"
    assert got.headers["cache-control"] == "no-store"
    assert got.content.startswith(b"GIF89a") and len(got.content) == 43
    explicit = {"url": "https://example.com/x", "event": "Download", "properties": '{"f":"a.pdf"}'}
    got = await api.conductor.simulate_get(GIF, headers={"User-Agent": CHROME}, params=explicit)
    assert got.status_code == 200
    rows = await flushed_rows(runtime)
    assert [(r["name"], r["path"], r["props"]) for r in rows] == [
        ("pageview", "/no-js", None),
        ("Download", "/x", '{"f":"a.pdf"}'),
    ]
    bad = await api.get(GIF, headers={"User-Agent": CHROME}, params={"x": "1"}, auth=False)
    assert bad.status == 422
    assert bad.json["errors"]["url"] and bad.json["errors"]["x"]
    foreign = await api.get(
        GIF,
        headers={"User-Agent": CHROME, "Referer": "https://evil.test/"},
        params={"url": "https://example.com/"},
        auth=False,
    )
    assert foreign.status == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "pageview"}, "url"),
        (event("ftp://example.com/"), "url"),
        (event("not a url"), "url"),
        (event("https://example.com/" + "a" * 2048), "url"),
        (event(referrer="nope"), "referrer"),
        (event(event=""), "event"),
        (event(event="x" * 121), "event"),
        (event(event=7), "event"),
        (event(extra=1), "extra"),
        (event(properties=[1]), "properties"),
        (event(properties={f"k{i}": i for i in range(31)}), "properties"),
        (event(properties={"k": "v" * 501}), "properties"),
        (event(properties={"k": {"nested": 1}}), "properties"),
        (
            event(
                properties={
                    "a": "v" * 400,
                    "b": "v" * 400,
                    "c": "v" * 400,
                    "d": "v" * 400,
                    "e": "v" * 400,
                    "f": "v" * 400,
                }
            ),
            "properties",
        ),
        (event(user_agent="u" * 513), "user_agent"),
        (event(url="https://example.com/\x00"), "url"),
        ([event()], "body"),
    ],
)
async def test_malformed_events_are_a_422_and_store_nothing(
    api: Api, runtime: Runtime, body: object, field: str
) -> None:
    await make_site(api)
    got = await track(api, body)
    assert got.status == 422, got.json
    assert got.json["error"] == "validation_failed"
    assert field in got.json["errors"], got.json
    assert await count(runtime) == 0


async def test_bad_bodies_are_4xx(api: Api, runtime: Runtime) -> None:
    await make_site(api)
    headers = {"User-Agent": CHROME}
    not_json = await api.post(TRACK, body=b"{nope", headers=headers, auth=False)
    assert not_json.status == 422 and "body" in not_json.json["errors"]
    xml = await api.post(
        TRACK, body=b"<a/>", headers={**headers, "Content-Type": "application/xml"}, auth=False
    )
    assert xml.status == 415
    big = orjson.dumps(event(properties={"t": "x" * 9000}))
    too_big = await api.post(TRACK, body=big, headers=headers, auth=False)
    assert too_big.status == 413
    assert await count(runtime) == 0


async def test_unknown_disabled_and_foreign_origin_are_refused(api: Api, runtime: Runtime) -> None:
    site = await make_site(api, allowed_origins=["*.example.org"])
    unknown = await track(api, event("https://unknown.test/"))
    assert unknown.status == 404 and unknown.json["error"] == "not_found"
    foreign = await track(api, event(), headers={"Origin": "https://evil.test"})
    assert foreign.status == 403 and foreign.json["error"] == "access_denied"
    allowed = await track(api, event(), headers={"Origin": "https://app.example.org"})
    assert allowed.status == 200, allowed.json
    # A page on an allowed host, named by the site's domain.
    staged = await track(api, event("https://stage.example.org/", domain="example.com"))
    assert staged.status == 200, staged.json
    other_page = await track(api, event("https://evil.test/", domain="example.com"))
    assert other_page.status == 403
    assert (
        await api.patch(f"/api/v1/pixel/sites/{site['id']}", json={"enabled": False})
    ).status == 200
    disabled = await track(api, event())
    assert disabled.status == 404
    assert await count(runtime) == 2


async def test_bots_are_counted_not_stored(api: Api, runtime: Runtime) -> None:
    site = await make_site(api)
    bots = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "curl/8.5.0",
        "python-requests/2.32",
        "",
    ]
    for ua in bots:
        got = await track(api, event(), ua=ua)
        assert got.status == 200 and got.json == {"tracked": False, "reason": "bot"}, ua
    # The body's user_agent counts as the client's.
    got = await track(api, event(user_agent="Mozilla/5.0 (compatible; bingbot/2.0)"))
    assert got.json["reason"] == "bot"
    assert await count(runtime) == 0
    day = day_of(runtime.clock.now_ms())
    assert await ingest_repo.bot_count(runtime.db, site["id"], day) == len(bots) + 1
    await track(api, event(), ua="Scrapy/2.11")
    await ingest(runtime).flush()
    assert await ingest_repo.bot_count(runtime.db, site["id"], day) == len(bots) + 2


async def test_sampling_keeps_whole_visitors(api: Api, runtime: Runtime) -> None:
    await make_site(api, sample_rate=0.5)
    kept = 0
    for i in range(200):
        got = await track(api, event(), ip=f"10.0.{i // 250}.{i % 250}")
        assert got.status == 200
        if got.json["tracked"]:
            kept += 1
            # The same visitor again: sampled in again.
            again = await track(
                api, event("https://example.com/2"), ip=f"10.0.{i // 250}.{i % 250}"
            )
            assert again.json["tracked"] is True
        else:
            assert got.json["reason"] == "sampled_out"
    assert 60 <= kept <= 140, kept
    assert await count(runtime) == 2 * kept


async def test_sample_rate_zero_keeps_nothing(api: Api, runtime: Runtime) -> None:
    await make_site(api, sample_rate=0)
    for i in range(20):
        assert (await track(api, event(), ip=f"10.1.0.{i}")).json["tracked"] is False
    assert await count(runtime) == 0


async def test_dnt_and_gpc_when_the_site_honours_them(api: Api, runtime: Runtime) -> None:
    await make_site(api, honor_dnt=True)
    await make_site(api, "other.test", honor_dnt=False)
    for header in ({"DNT": "1"}, {"Sec-GPC": "1"}):
        got = await track(api, event(), headers=header)
        assert got.json == {"tracked": False, "reason": "do_not_track"}
        assert (await track(api, event("https://other.test/"), headers=header)).json["tracked"]
    assert (await track(api, event(), headers={"DNT": "0"})).json["tracked"] is True
    assert await count(runtime) == 3


async def test_excluded_paths_prefixes_and_globs(api: Api, runtime: Runtime) -> None:
    await make_site(api, excluded_paths=["/admin", "/blog/*/draft"])
    cases = {
        "/admin": False,
        "/admin/users": False,
        "/administrator": True,
        "/blog/2024/draft": False,
        "/blog/2024/final": True,
        "/": True,
    }
    for path, tracked in cases.items():
        got = await track(api, event(f"https://example.com{path}"))
        assert got.json["tracked"] is tracked, (path, got.json)
    assert await count(runtime) == 3


async def test_features_switched_off(api: Api, runtime: Runtime) -> None:
    await make_site(api, features={"pageviews": True, "events": False, "sessions": False})
    got = await track(api, {"event": "Signup", "url": "https://example.com/"})
    assert got.json == {"tracked": False, "reason": "feature_disabled"}
    assert (await track(api, event())).json["tracked"] is True
    [row] = await flushed_rows(runtime)
    assert row["session_id"] is None


async def test_cors_preflight(api: Api) -> None:
    got = await api.request("OPTIONS", TRACK, headers={"Origin": "https://example.com"}, auth=False)
    assert got.status == 204
    assert got.header("access-control-allow-origin") == "https://example.com"
    assert "POST" in (got.header("access-control-allow-methods") or "")
    assert got.header("access-control-allow-headers") == "Content-Type"


async def test_the_per_ip_limit(
    database_url: str, tmp_path: Path, clock: ManualClock, runtime: Runtime, api: Api
) -> None:
    await make_site(api)
    limited = make_settings(
        database_url,
        tmp_path,
        trusted_proxies=LOOPBACK,
        pixel_rate_limit=5,
        shm_path=str(tmp_path / "shm2"),
    )
    async with serving(limited, clock) as (_, client):
        statuses = [(await track(client, event(), ip="10.9.9.9")).status for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        assert (await track(client, event(), ip="10.9.9.8")).status == 200
        clock.advance(60)
        assert (await track(client, event(), ip="10.9.9.9")).status == 200


async def test_stored_events_count_towards_pixel_events(api: Api, runtime: Runtime) -> None:
    """Every stored event is one unit of the workspace's pixel_events (metered in memory,
    flushed with api_calls); refused and dropped ones are not."""
    await make_site(api)
    for _ in range(3):
        assert (await track(api, event())).json == {"tracked": True}
    assert (await track(api, event(), ua="curl/8.5.0")).json["tracked"] is False  # a bot
    await runtime.entitlements.flush()
    summary = await api.get("/api/v1/entitlements/summary")
    assert summary.status == 200, summary.json
    assert summary.json["data"]["entitlements"]["pixel_events"]["used"] == 3


async def test_track_now_answers_only_from_memory(api: Api, runtime: Runtime) -> None:
    """The fast path's synchronous ``track_now``: None (having changed nothing) while the
    site or today's salt is not loaded; ``track`` loads them; then ``track_now`` answers
    alone, and a site change sends it back to ``track``."""
    from core_api.pixel.ingest import TRACKED, Client, parse_hit

    site = await make_site(api)
    pixel = ingest(runtime)
    hit = parse_hit(event())
    sender = Client("10.9.0.1", CHROME, None, None, None)
    assert pixel.track_now(hit, sender) is None  # the site is not in memory yet
    assert await pixel.track(hit, sender) == TRACKED
    assert pixel.track_now(hit, sender) == TRACKED
    saved, pixel.salts.keys = pixel.salts.keys, {}
    pending = pixel.queue.buffer.pending
    assert pixel.track_now(hit, sender) is None  # no salt: nothing buffered, nothing counted
    assert pixel.queue.buffer.pending == pending
    assert await pixel.track(hit, sender) == TRACKED  # loads today's salt again
    assert pixel.salts.keys and pixel.salts.keys.keys() == saved.keys()
    got = await api.patch(f"/api/v1/pixel/sites/{site['id']}", json={"enabled": False})
    assert got.status == 200, got.json
    assert pixel.track_now(hit, sender) is None  # the invalidation log moved
    with pytest.raises(Exception, match="No enabled pixel site"):
        await pixel.track(hit, sender)
    assert len(await flushed_rows(runtime)) == 3
