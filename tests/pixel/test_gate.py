"""The Rust gate (``PixelIngest.track_fast``, rust/pixel_gate.rs) is a cache of the
Python rules (``PixelIngest._decide``): for any site settings and any request, it either
answers exactly what ``track_now`` answers, buffering the same event and counting the
same bot, or defers (None) having changed nothing. Checked here side by side: two
ingests over the same sites, keys and clock, one answering through the gate, the other
through the Python rules, over seeded random sites and requests (many combinations
each run, the same ones every run)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from ingest_support import CHROME, IPHONE, SITES, close_ingest, make_site

from conftest import Api
from core_api._native import pixel_hit
from core_api.clock import ManualClock
from core_api.entitlements.meter import Meter
from core_api.errors import ApiError
from core_api.pixel import useragent
from core_api.pixel.ingest import TRACKED, Client, Hit, Outcome, PixelIngest, host_of
from core_api.runtime import Runtime

pytestmark = pytest.mark.usefixtures(close_ingest.__name__)

ORIGINS = [
    None,
    None,
    b"https://example.com",
    b"https://example.com",
    b"https://example.com",
    b"https://www.example.com",
    b"null",
    b"",
    b"https://evil.test",
    b"https://a.cdn.example.net",
    b"https://cdn.example.net",
    b"https://partner.org:8443",
    "https://ex\u00e4mple.com".encode("latin-1"),
    b"https://[::1]",
    b"https://a..example.com",
]
PRIVACY = [None, None, b"1", b" 1\t", b"0", b"1\xa0", b"\x1f1", b"yes"]
AGENTS = [
    CHROME.encode(),
    CHROME.encode(),
    IPHONE.encode(),
    b"curl/8.5",
    b"",
    b"Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120",
    "Mozilla \u00e9".encode("latin-1"),
]
URLS = [
    "https://example.com/",
    "https://example.com/",
    "https://example.com/p?q=1",
    "https://www.example.com/admin",
    "https://EXAMPLE.com/admin/x",
    "https://example.com/administrator",
    "https://a.cdn.example.net/x#/route",
    "https://evil.test/",
    "https://example.com/blog/1/draft",
    "http://example.com:8080/p",
]
REFERRERS = [
    None,
    "https://www.google.com/",
    "https://example.com/a",
    "https://partner.org/",
    "https://www.example.com/",
    "https://b.cdn.example.net/",
    "https://news.org:81/",
]


def site_settings(rng: random.Random) -> dict[str, Any]:
    return {
        "allowed_origins": rng.sample(["*.cdn.example.net", "partner.org", "other.org"], 2),
        "honor_dnt": rng.random() < 0.7,
        "features": {k: rng.random() < 0.8 for k in ("pageviews", "events", "sessions")},
        "sample_rate": rng.choice([1.0, 1.0, 0.5, 0.0]),
        "excluded_paths": rng.sample(
            ["/admin", "/admin/", "/x", "/blog/*/draft"], rng.randint(0, 2)
        ),
    }


def request(rng: random.Random) -> tuple[bytes, dict[str, Any]]:
    body: dict[str, Any] = {"url": rng.choice(URLS)}
    if rng.random() < 0.5:
        body["event"] = rng.choice(["pageview", "signup"])
    if (referrer := rng.choice(REFERRERS)) is not None:
        body["referrer"] = referrer
    if rng.random() < 0.2:
        body["domain"] = rng.choice(["example.com", "evil.test"])
    if rng.random() < 0.2:
        body["user_agent"] = rng.choice([CHROME, "Googlebot/2.1 (+http://www.google.com/bot.html)"])
    if rng.random() < 0.3:
        body["properties"] = {"plan": "pro", "seats": rng.randint(-5, 5)}
    sender = {
        "ip": rng.choice(["203.0.113.7", "2001:db8::1", "10.0.0.2"]),
        "user_agent": rng.choice(AGENTS),
        "origin": rng.choice(ORIGINS),
        "dnt": rng.choice(PRIVACY),
        "gpc": rng.choice(PRIVACY),
    }
    if rng.random() < 0.5:  # half are what browsers send most
        sender.update(user_agent=CHROME.encode(), origin=b"https://example.com", dnt=None, gpc=None)
    return json.dumps(body).encode(), sender


def client_of(sender: dict[str, Any]) -> Client:
    """The ``Client`` the fast path builds when the gate defers."""

    def text(value: bytes | None) -> str | None:
        return None if value is None else value.decode("latin-1")

    origin = text(sender["origin"])
    return Client(
        sender["ip"],
        sender["user_agent"].decode("latin-1"),
        None if origin is None else host_of(origin),
        text(sender["dnt"]),
        text(sender["gpc"]),
    )


def outcome_of(call: Any, *args: Any, **kwargs: Any) -> Outcome | str | None:
    try:
        result: Outcome | None = call(*args, **kwargs)
    except ApiError as exc:
        return f"{exc.status} {exc.code}"
    return result


async def teach(ingest: PixelIngest, hit: Hit, client: Client) -> None:
    """What ``_decide`` would have taught the gate after an event of this site and agent."""
    head, site = await ingest._site(hit.domain or hit.host)
    now = ingest.clock.now_ms()
    if site is not None and site.enabled:
        ingest._teach(hit.domain or hit.host, head, site, await ingest.salts.ensure(now), now)
    agent = useragent.classify(hit.user_agent or client.user_agent)
    ingest.gate.learn_agent(
        hit.user_agent or client.user_agent, agent.bot, agent.browser, agent.device
    )


def state(ingest: PixelIngest) -> tuple[int, int, dict[Any, int]]:
    return ingest.queue.buffer.pending, len(ingest.sessions), dict(ingest.bots)


def drain(ingest: PixelIngest) -> list[tuple[Any, ...]]:
    batch = ingest.queue.buffer.take(1_000_000)
    rows = [tuple(row) for row in batch.rows()]
    ingest.queue.buffer.commit(batch)
    return rows


async def test_the_gate_answers_as_the_python_rules_or_defers(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    site = await make_site(api)
    directory = runtime.pixel_ingest.sites
    fast = PixelIngest(runtime.settings, runtime.db, clock, directory, meter=Meter())
    python = PixelIngest(runtime.settings, runtime.db, clock, directory, meter=Meter())
    await fast.salts.ensure(clock.now_ms())
    python.salts.keys = dict(fast.salts.keys)
    rng = random.Random(20261129)
    answered: dict[str, int] = {}
    try:
        for _ in range(25):
            rules = site_settings(rng)
            got = await api.patch(f"{SITES}/{site['id']}", json=rules)
            assert got.status == 200, got.json
            for _ in range(40):
                clock.advance(rng.choice([0.001, 1.0, 2000.0]))  # 2,000 s: a session ends
                body, sender = request(rng)
                parsed = pixel_hit(body)
                if parsed is None:
                    continue  # parse_hit decides such bodies (test_parse_native.py)
                hit = Hit(*parsed.fields())
                client = client_of(sender)
                await teach(fast, hit, client)
                await python._site(hit.domain or hit.host)
                python.salts.keys = dict(fast.salts.keys)  # days pass: teach() rotated
                before = state(fast)
                expected = outcome_of(python.track_now, hit, client)
                got_fast = outcome_of(fast.track_fast, parsed, **sender)
                by = "gate"
                if got_fast is None:
                    assert state(fast) == before, (body, sender)  # deferred: nothing changed
                    by = "python"
                    got_fast = outcome_of(fast.track_now, hit, client)  # the fallback
                assert got_fast == expected, (body, sender, rules)
                assert drain(fast) == drain(python), (body, sender)
                assert fast.bots == python.bots
                assert fast.meter is not None and python.meter is not None
                assert fast.meter.drain() == python.meter.drain()  # pixel_events usage
                key = got_fast if isinstance(got_fast, str) else str(got_fast.reason or "tracked")
                answered[f"{key} by {by}"] = answered.get(f"{key} by {by}", 0) + 1
    finally:
        await fast.close()
        await python.close()
    # The gate must have decided every kind of answer itself, not deferred them all.
    for reason in ("tracked", "bot", "do_not_track", "excluded_path", "sampled_out"):
        assert answered.get(f"{reason} by gate", 0) >= 10, answered


async def test_a_site_change_reaches_the_gate_on_the_next_event(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    """The gate answers from a site as it was at an invalidation-log head; any site change
    moves the head (in every process on the host), so the next event is decided by
    Python again, which sees the change: here a disabled site is a 404 at once."""
    from core_api.errors import NotFound

    site = await make_site(api)
    ingest = runtime.pixel_ingest
    sender = {"ip": "203.0.113.7", "user_agent": CHROME.encode(), "origin": None, "dnt": None}
    body = json.dumps({"url": "https://example.com/a"}).encode()
    hit = pixel_hit(body)
    assert hit is not None
    assert ingest.track_fast(hit, **sender, gpc=None) is None  # nothing learnt yet
    first = Hit(*hit.fields())
    assert (await ingest.track(first, client_of({**sender, "gpc": None}))).tracked
    hit = pixel_hit(body)
    assert hit is not None
    assert ingest.track_fast(hit, **sender, gpc=None) == TRACKED  # learnt
    got = await api.patch(f"{SITES}/{site['id']}", json={"enabled": False})
    assert got.status == 200, got.json
    hit = pixel_hit(body)
    assert hit is not None
    pending = ingest.queue.buffer.pending
    assert ingest.track_fast(hit, **sender, gpc=None) is None
    assert ingest.queue.buffer.pending == pending
    with pytest.raises(NotFound):
        await ingest.track(Hit(*hit.fields()), client_of({**sender, "gpc": None}))
