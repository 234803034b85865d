"""A headless Chromium driven over the W3C WebDriver protocol with httpx (no extra
dependency): Debian's ``chromium`` and ``chromium-driver``, which CI installs."""

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

from support import free_port

NEEDS_CHROMIUM = pytest.mark.skipif(
    shutil.which("chromedriver") is None or shutil.which("chromium") is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
    "chromium-driver)",
)


class Browser:
    """The few WebDriver commands the tests need."""

    def __init__(self, base: str, args: tuple[str, ...] = (), console: bool = False) -> None:
        self.http = httpx.Client(base_url=base, timeout=60.0)
        options = {
            "binary": shutil.which("chromium"),
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                *args,
            ],
        }
        wanted: dict[str, Any] = {"browserName": "chrome", "goog:chromeOptions": options}
        if console:
            wanted["goog:loggingPrefs"] = {"browser": "ALL"}
        created = self.http.post("/session", json={"capabilities": {"alwaysMatch": wanted}})
        assert created.status_code == 200, created.text
        self.session = f"/session/{created.json()['value']['sessionId']}"

    def go(self, url: str) -> None:
        got = self.http.post(f"{self.session}/url", json={"url": url})
        assert got.status_code == 200, got.text

    def run(self, script: str, *args: Any) -> Any:
        got = self.http.post(
            f"{self.session}/execute/sync", json={"script": script, "args": list(args)}
        )
        assert got.status_code == 200, got.text
        return got.json()["value"]

    def wait_for(self, script: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.run(script):
            assert time.monotonic() < deadline, f"timed out waiting for: {script}"
            time.sleep(0.05)

    def console(self) -> list[dict[str, Any]]:
        """The page's console lines (the session must be made with ``console=True``)."""
        got = self.http.post(f"{self.session}/se/log", json={"type": "browser"})
        assert got.status_code == 200, got.text
        entries: list[dict[str, Any]] = got.json()["value"]
        return entries

    def close(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.http.delete(self.session)
        self.http.close()


@contextlib.contextmanager
def chromium(tmp_path: Path, *args: str, console: bool = False) -> Iterator[Browser]:
    """chromedriver on a free port and one browser session, both stopped afterwards."""
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
            browser = Browser(base, args, console)
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
