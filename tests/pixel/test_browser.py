"""A real headless Chromium (Debian ``chromium`` + ``chromium-driver``) loads a page served
on loopback that includes pixel.js from a real `core-api serve`, navigates a small SPA
(pushState, popstate, a hash route), sends a custom event (through the fetch keepalive
fallback: the beacon is made to refuse it), and the stats show exactly those pageviews and
the event. A page without the automation opt-in sends nothing.

Driven over the W3C WebDriver protocol with httpx (no extra dependency). CI installs the
browser with ``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import Launcher, clean_env, core_api_command, fresh_database
from webdriver import NEEDS_CHROMIUM, Browser, chromium

pytestmark = [pytest.mark.e2e, NEEDS_CHROMIUM]

SITE = "shop.localhost"  # Chromium resolves *.localhost to loopback; the rule below pins it
# A desktop Chrome user agent: the ingest path drops "HeadlessChrome" as a bot, rightly.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)


def page(core: str, opt_ins: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Shop</title>"
        f'<script defer data-site="{SITE}" {opt_ins} src="{core}/api/v1/pixel/pixel.js">'
        "</script></head><body><h1>Shop</h1></body></html>"
    ).encode()


@contextlib.contextmanager
def page_server(core: str) -> Iterator[int]:
    """The site: every path is the SPA's page; /plain lacks the automation opt-in."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/favicon"):
                self.send_response(404)
                self.end_headers()
                return
            opt_ins = "data-allow-localhost"
            if not self.path.startswith("/plain"):
                opt_ins += " data-allow-automation"
            body = page(core, opt_ins)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


CONFIG_LOADED = (
    "return performance.getEntriesByType('resource')"
    ".some(function (e) { return e.name.indexOf('/config?') > 0 })"
)


def spa_visit(browser: Browser, site_url: str) -> None:
    browser.go(site_url + "/")
    browser.wait_for(CONFIG_LOADED)
    time.sleep(0.3)  # the config's answer is handled after its resource entry appears
    browser.run("history.pushState({}, '', '/about')")
    browser.run("history.back()")
    browser.wait_for("return location.pathname == '/'")
    time.sleep(0.3)  # popstate is dispatched after the navigation completes
    browser.run("location.hash = '#/settings'")
    browser.wait_for("return location.hash == '#/settings'")
    time.sleep(0.3)
    # The custom event goes through the fallback: a refused beacon, then fetch keepalive.
    browser.run("navigator.sendBeacon = function () { return false }")
    browser.run("pixel('Signup', {plan: 'pro'})")
    time.sleep(0.3)
    # Not opted in to automated browsers: sends nothing.
    browser.go(site_url + "/plain")
    browser.wait_for(CONFIG_LOADED.replace("/config?", "/pixel.js"))
    assert browser.run("return typeof window.pixel") == "function"
    time.sleep(0.5)


def stats_until(client: httpx.Client, site_id: int, pageviews: int) -> dict[str, Any]:
    """Events are durable within about a second of arriving; poll for them."""
    deadline = time.monotonic() + 15
    while True:
        got = client.get("/api/v1/pixel/stats", params={"site_id": str(site_id)})
        assert got.status_code == 200, got.text
        data: dict[str, Any] = got.json()["data"]
        done = data["totals"]["pageviews"] >= pageviews and data["totals"]["events"] >= 1
        if done or time.monotonic() > deadline:
            return data
        time.sleep(0.25)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_chromium_spa_pageviews_and_event_reach_the_stats(
    backend: str, tmp_path: Path, launcher: Launcher
) -> None:
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path}/db.sqlite"
        else:
            url = stack.enter_context(fresh_database("browser"))
        env = clean_env(
            tmp_path,
            database_url=url,
            shm_path=str(tmp_path / "shm"),
            secret_key="browser-test-secret-key-0123456789abcdef",
        )
        boot = subprocess.run(
            [*core_api_command(), "bootstrap", "--name", "Shop", "--tier", "starter"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            check=True,
            timeout=60,
        )
        key = json.loads(boot.stdout)["api_key"]["key"]
        server = launcher.start(env, 1)
        client = stack.enter_context(
            httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {key}"})
        )
        made = client.post("/api/v1/pixel/sites", json={"domain": SITE, "name": "Shop"})
        assert made.status_code == 201, made.text
        site_id = made.json()["data"]["id"]
        site_port = stack.enter_context(page_server(server.base))
        browser = stack.enter_context(
            chromium(
                tmp_path,
                f"--user-agent={USER_AGENT}",
                f"--host-resolver-rules=MAP {SITE} 127.0.0.1",
            )
        )
        spa_visit(browser, f"http://{SITE}:{site_port}")

        stats_until(client, site_id, 4)
        time.sleep(1.5)  # past the ingest flush: anything /plain sent would show by now
        data = stats_until(client, site_id, 4)
        pages = {p["path"]: p["pageviews"] for p in data["top_pages"]}
        assert pages == {"/": 2, "/about": 1, "/settings": 1}, (data, server.stderr())
        assert data["totals"]["pageviews"] == 4
        assert data["events"] == [{"name": "Signup", "count": 1, "visitors": 1}]
        assert data["totals"]["visitors"] == 1
        assert data["totals"]["sessions"] == 1
        assert [d["name"] for d in data["devices"]] == ["desktop"]
