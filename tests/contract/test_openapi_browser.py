"""The docs page in a real headless Chromium: Swagger UI renders every operation of the
document from the server's own assets, and the page's CSP refuses nothing it needs."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core_api.openapi import document
from support import Launcher, free_port, sqlite_env

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("chromedriver") is None or shutil.which("chromium") is None,
        reason="needs Debian's chromium and chromium-driver",
    ),
]


class Browser:
    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=60.0)
        options = {
            "binary": shutil.which("chromium"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        }
        created = self.http.post(
            "/session",
            json={
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": options,
                        "goog:loggingPrefs": {"browser": "ALL"},
                    }
                }
            },
        )
        assert created.status_code == 200, created.text
        self.session = f"/session/{created.json()['value']['sessionId']}"

    def go(self, url: str) -> None:
        got = self.http.post(f"{self.session}/url", json={"url": url})
        assert got.status_code == 200, got.text

    def run(self, script: str) -> Any:
        got = self.http.post(f"{self.session}/execute/sync", json={"script": script, "args": []})
        assert got.status_code == 200, got.text
        return got.json()["value"]

    def console(self) -> list[dict[str, Any]]:
        got = self.http.post(f"{self.session}/se/log", json={"type": "browser"})
        assert got.status_code == 200, got.text
        entries: list[dict[str, Any]] = got.json()["value"]
        return entries

    def close(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.http.delete(self.session)
        self.http.close()


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[Browser]:
    port = free_port()
    with open(tmp_path / "chromedriver.log", "wb") as log:
        driver = subprocess.Popen(
            ["chromedriver", f"--port={port}"], stdout=log, stderr=subprocess.STDOUT
        )
        browser = None
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/status", timeout=1).json()["value"]["ready"]:
                        break
                assert time.monotonic() < deadline, "chromedriver did not start"
                time.sleep(0.1)
            browser = Browser(base)
            yield browser
        finally:
            if browser is not None:
                browser.close()
            driver.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                driver.wait(timeout=10)
            if driver.poll() is None:
                driver.kill()
                driver.wait()


def test_docs_page_renders_every_operation(launcher: Launcher, tmp_path: Path) -> None:
    server = launcher.start(sqlite_env(tmp_path), 1)
    served = httpx.get(f"{server.base}/api/v1/openapi.json", timeout=10).json()
    assert served == document()
    operations = sum(
        1
        for item in served["paths"].values()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "options", "head", "trace")
    )
    with chromium(tmp_path) as browser:
        browser.go(f"{server.base}/api/docs")
        deadline = time.monotonic() + 30
        rendered = 0
        while time.monotonic() < deadline:
            rendered = browser.run("return document.querySelectorAll('.opblock').length")
            if rendered >= operations:
                break
            time.sleep(0.1)
        assert rendered == operations, (rendered, operations, browser.console())
        origins = browser.run(
            "return performance.getEntriesByType('resource').map(function (e) {"
            " return new URL(e.name).origin })"
        )
        assert set(origins) == {server.base}, origins  # nothing from any other origin
        problems = [
            entry
            for entry in browser.console()
            if entry.get("level") == "SEVERE" or "Content Security Policy" in entry["message"]
        ]
        assert not problems, problems
