"""pixel.js: served with a long cache and a strong ETag (304 on revalidation), gzipped
when accepted and at most 1 KB so, and the behaviour the browser test drives is there."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from importlib import resources

import pytest
from pixel_sites_support import SCRIPT

from conftest import Api
from core_api.pixel.snippet import MAX_GZIPPED, Script, matches

SOURCE = (resources.files("core_api.pixel") / "static" / "pixel.js").read_bytes()


async def test_served_with_long_cache_and_etag(api: Api) -> None:
    plain = await api.conductor.simulate_get(SCRIPT, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.content == SOURCE
    assert plain.headers["content-type"].startswith("text/javascript")
    assert "content-encoding" not in plain.headers
    cache = plain.headers["cache-control"]
    assert "public" in cache and "max-age=86400" in cache
    etag = plain.headers["etag"]
    assert etag == '"' + hashlib.sha256(SOURCE).hexdigest()[:20] + '"'
    assert plain.headers["access-control-allow-origin"] == "*"
    assert "Accept-Encoding" in plain.headers["vary"]

    again = await api.conductor.simulate_get(
        SCRIPT, headers={"Accept-Encoding": "identity", "If-None-Match": etag}
    )
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    stale = await api.conductor.simulate_get(
        SCRIPT, headers={"Accept-Encoding": "identity", "If-None-Match": '"other"'}
    )
    assert stale.status_code == 200


async def test_gzipped_under_one_kilobyte(api: Api) -> None:
    zipped = await api.conductor.simulate_get(SCRIPT, headers={"Accept-Encoding": "gzip, br"})
    assert zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    assert len(zipped.content) <= MAX_GZIPPED, len(zipped.content)
    assert gzip.decompress(zipped.content) == SOURCE
    etag = zipped.headers["etag"]
    assert etag.endswith('-gz"')  # another representation, another tag
    revalidated = await api.conductor.simulate_get(
        SCRIPT, headers={"Accept-Encoding": "gzip", "If-None-Match": f"W/{etag}"}
    )
    assert revalidated.status_code == 304
    refused = await api.conductor.simulate_get(SCRIPT, headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


async def test_no_auth_and_not_charged_to_the_pixel_limit(api: Api) -> None:
    result = await api.conductor.simulate_get(SCRIPT)
    assert result.status_code == 200
    assert "x-ratelimit-limit" not in result.headers


def test_same_etag_in_every_process() -> None:
    assert Script.load().etag == Script.load().etag
    assert Script.load().gzipped == Script.load().gzipped  # mtime 0: byte-identical


def test_if_none_match() -> None:
    assert matches('"a", "b"', '"b"') and matches("*", '"x"') and matches('W/"x"', '"x"')
    assert not matches(None, '"x"') and not matches('"y"', '"x"')


def test_script_uses_what_the_issue_asks() -> None:
    text = SOURCE.decode()
    for needle in (
        "sendBeacon",
        "keepalive",
        "pushState",
        "popstate",
        "hashchange",
        "webdriver",
        "HeadlessChrome",
        "allow-localhost",
        "allow-automation",
        "/config?site=",
        "/track",
    ):
        assert needle in text, needle
    assert "cookie" not in text and "localStorage" not in text and "sessionStorage" not in text


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_script_parses() -> None:
    path = resources.files("core_api.pixel") / "static" / "pixel.js"
    subprocess.run(["node", "--check", str(path)], check=True, timeout=30)
