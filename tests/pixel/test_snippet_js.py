"""pixel.js's behaviour, run by node against a minimal fake page (tests/pixel/
snippet_harness.js): what it skips, which navigations are pageviews, hash routes, custom
events and the queue, the config it obeys, and the sendBeacon / fetch keepalive transport.
The real-browser test (test_browser.py) proves the same end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

SCRIPT = str(resources.files("core_api.pixel") / "static" / "pixel.js")
HARNESS = str(Path(__file__).with_name("snippet_harness.js"))
API = "https://stats.example.net/api/v1/pixel"
ON = {"enabled": True, "features": {"pageviews": True, "events": True, "sessions": True}}


def run(url: str = "https://shop.example.com/", **options: Any) -> list[dict[str, Any]]:
    spec = {
        "url": url,
        "src": f"{API}/pixel.js",
        "attrs": {"site": "shop.example.com"},
        "config": ON,
        **options,
    }
    done = subprocess.run(
        ["node", HARNESS, SCRIPT, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def pages(sent: list[dict[str, Any]]) -> list[str]:
    return [
        s["body"]["url"] for s in sent if s["via"] != "config" and s["body"]["event"] == "pageview"
    ]


def test_config_then_pageview_by_beacon() -> None:
    sent = run(referrer="https://www.google.com/search")
    assert sent[0] == {"via": "config", "url": f"{API}/config?site=shop.example.com"}
    assert sent[1] == {
        "via": "beacon",
        "url": f"{API}/track",
        "body": {
            "event": "pageview",
            "url": "https://shop.example.com/",
            "referrer": "https://www.google.com/search",
        },
    }
    assert len(sent) == 2


def test_spa_navigation_and_hash_routes() -> None:
    sent = run(
        url="https://shop.example.com/?utm=x",
        steps=[
            ["push", "/about"],
            ["push", "/about"],  # the same URL again: not a second pageview
            ["pop", "/?utm=x"],
            ["hash", "#/settings"],
            ["hash", "#!/users/7"],
            ["hash", "#pricing"],  # an anchor, not a route: the page is / again
            ["hash", "#pricing2"],  # another anchor on the same page: nothing
        ],
    )
    assert pages(sent) == [
        "https://shop.example.com/?utm=x",
        "https://shop.example.com/about",
        "https://shop.example.com/?utm=x",
        "https://shop.example.com/settings?utm=x",
        "https://shop.example.com/users/7?utm=x",
        "https://shop.example.com/?utm=x",
    ]
    referrers = [s["body"]["referrer"] for s in sent if s["via"] == "beacon"]
    assert referrers[:3] == [
        None,
        "https://shop.example.com/?utm=x",
        "https://shop.example.com/about",
    ]


def test_custom_events_and_the_queue() -> None:
    sent = run(
        queued=[["Early", {"a": 1}]],
        steps=[["event", "Signup", {"plan": "pro"}], ["event", "Plain"]],
    )
    bodies = [s["body"] for s in sent if s["via"] == "beacon"]
    assert bodies[0]["event"] == "pageview"
    assert bodies[1:] == [
        {
            "event": "Early",
            "url": "https://shop.example.com/",
            "referrer": "https://shop.example.com/",
            "properties": {"a": 1},
        },
        {
            "event": "Signup",
            "url": "https://shop.example.com/",
            "referrer": "https://shop.example.com/",
            "properties": {"plan": "pro"},
        },
        {
            "event": "Plain",
            "url": "https://shop.example.com/",
            "referrer": "https://shop.example.com/",
        },
    ]


def test_fetch_keepalive_when_the_beacon_refuses() -> None:
    sent = run(beacon=False, steps=[["event", "Signup"]])
    fetched = [s for s in sent if s["via"] == "fetch"]
    assert [f["body"]["event"] for f in fetched] == ["pageview", "Signup"]
    assert fetched[0]["url"] == f"{API}/track"
    assert fetched[0]["init"] == {
        "method": "POST",
        "keepalive": True,
        "credentials": "omit",
        "headers": {"Content-Type": "text/plain"},
    }


def test_config_is_obeyed() -> None:
    assert run(config={"enabled": False, "features": {}}, steps=[["event", "X"]]) == [
        {"via": "config", "url": f"{API}/config?site=shop.example.com"}
    ]
    no_events = {"enabled": True, "features": {"pageviews": True, "events": False}}
    sent = run(config=no_events, steps=[["event", "X"]])
    assert [s["body"]["event"] for s in sent if s["via"] == "beacon"] == ["pageview"]
    no_pages = {"enabled": True, "features": {"pageviews": False, "events": True}}
    sent = run(config=no_pages, steps=[["push", "/b"], ["event", "X"]])
    assert [s["body"]["event"] for s in sent if s["via"] == "beacon"] == ["X"]


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:3000/",
        "http://127.0.0.1/",
        "http://[::1]:8080/",
        "http://0.0.0.0/",
        "http://shop.localhost/",
        "file:///home/me/index.html",
    ],
)
def test_local_pages_send_nothing_unless_allowed(url: str) -> None:
    assert run(url=url, steps=[["event", "X"]]) == []
    if not url.startswith("file:"):
        allowed = run(url=url, attrs={"site": "s.example", "allow-localhost": ""})
        assert pages(allowed) == [url]


@pytest.mark.parametrize(
    "options",
    [
        {"webdriver": True},
        {"ua": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0 Safari/537.36"},
    ],
)
def test_automated_browsers_send_nothing_unless_allowed(options: dict[str, Any]) -> None:
    assert run(**options, steps=[["event", "X"]]) == []
    allowed = run(**options, attrs={"site": "shop.example.com", "allow-automation": ""})
    assert pages(allowed) == ["https://shop.example.com/"]


def test_api_base_and_site_from_the_tag() -> None:
    sent = run(src="https://a.example/api/v1/pixel/pixel.js?v=3", attrs={})
    assert sent[0]["url"] == "https://a.example/api/v1/pixel/config?site=shop.example.com"
    assert sent[1]["url"] == "https://a.example/api/v1/pixel/track"
    sent = run(attrs={"site": "other.example", "api": "https://b.example/px"})
    assert sent[0]["url"] == "https://b.example/px/config?site=other.example"
