"""The docs page in a real headless Chromium: Swagger UI renders every operation of the
document from the server's own assets, and the page's CSP refuses nothing it needs."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from core_api.openapi import document
from support import Launcher, sqlite_env
from webdriver import NEEDS_CHROMIUM, chromium

pytestmark = [pytest.mark.e2e, NEEDS_CHROMIUM]


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
    with chromium(tmp_path, console=True) as browser:
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
