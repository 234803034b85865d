"""Helpers for the ingest tests: a site made through the API, events posted the way
browsers send them, rows read back from pixel_events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import Api
from core_api.pixel.ingest import PixelIngest, ingest_of
from core_api.runtime import Runtime

SITES = "/api/v1/pixel/sites"
TRACK = "/api/v1/pixel/track"
GIF = "/api/v1/pixel/track.gif"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


async def make_site(api: Api, domain: str = "example.com", **settings: Any) -> dict[str, Any]:
    got = await api.post(SITES, json={"domain": domain, "name": domain, **settings})
    assert got.status == 201, got.json
    return dict(got.json["data"])


def event(url: str = "https://example.com/page", **extra: Any) -> dict[str, Any]:
    return {"event": "pageview", "url": url, **extra}


async def track(
    api: Api,
    body: Any,
    *,
    ua: str = CHROME,
    ip: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    all_headers = {"User-Agent": ua, **(headers or {})}
    if ip is not None:
        all_headers["X-Forwarded-For"] = ip  # honoured only with trusted_proxies set
    return await api.post(TRACK, json=body, headers=all_headers, auth=False)


def ingest(runtime: Runtime) -> PixelIngest:
    return ingest_of(runtime)


async def flushed_rows(runtime: Runtime) -> list[dict[str, Any]]:
    await ingest(runtime).flush()
    return await runtime.db.fetch_all(
        "SELECT site_id, ts, name, path, referrer_source, visitor_id, session_id, browser, "
        "device, props FROM pixel_events ORDER BY ts, path"
    )


@pytest.fixture
async def close_ingest(runtime: Runtime) -> AsyncIterator[None]:
    """The writer's own connection closes with the test (as the flush job's last run does
    in a serving process). Used by the tests that have a ``runtime``."""
    yield
    await ingest_of(runtime).close()
