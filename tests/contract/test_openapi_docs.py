"""GET /api/v1/openapi.json and the docs page /api/docs: public, cached bytes, own assets only."""

from __future__ import annotations

import gzip
import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Any

import falcon.testing
import orjson
import pytest

from core_api.openapi import document
from core_api.openapi.resources import ASSETS, DOCS_CSP


@pytest.fixture
def database_url(tmp_path: Path) -> str:  # the routes touch no database: SQLite is enough
    return f"sqlite:///{tmp_path}/core-api.db"


async def _get(api: Any, path: str, **headers: str) -> falcon.testing.Result:
    return await api.conductor.simulate_get(path, headers=headers)


async def test_document_is_public_json_with_etag(api: Any) -> None:
    result = await _get(api, "/api/v1/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/json"
    assert orjson.loads(result.content) == document()
    assert "x-ratelimit-limit" not in result.headers  # public: not charged to any bucket
    assert result.headers["cache-control"] == "no-cache"
    etag = result.headers["etag"]
    again = await _get(api, "/api/v1/openapi.json", **{"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    zipped = await _get(api, "/api/v1/openapi.json", **{"Accept-Encoding": "gzip, br"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["etag"] != etag
    assert gzip.decompress(zipped.content) == result.content


async def test_document_ignores_a_bad_key(api: Any) -> None:
    result = await _get(api, "/api/v1/openapi.json", Authorization="Bearer nope")
    assert result.status_code == 200


async def test_docs_page_loads_only_its_own_assets(api: Any) -> None:
    result = await _get(api, "/api/docs")
    assert result.status_code == 200
    assert result.headers["content-type"] == "text/html; charset=utf-8"
    assert result.headers["content-security-policy"] == DOCS_CSP
    assert result.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in DOCS_CSP
    assert "default-src 'none'" in DOCS_CSP
    page = result.text
    assert 'data-spec-url="/api/v1/openapi.json"' in page
    assert "<script>" not in page  # no inline script: the CSP would refuse it
    urls = [u for u in re.findall(r'(?:src|href)="([^"]+)"', page) if u != "data:,"]
    assert urls and all(url.startswith("/api/") for url in urls), urls
    for url in urls:
        asset = await _get(api, url)
        assert asset.status_code == 200, url
    # Trailing slash is the same page (Falcon strips it), and the links stay absolute.
    assert (await _get(api, "/api/docs/")).text == page


async def test_assets_are_the_vendored_files(api: Any) -> None:
    folder = resources.files("core_api.openapi") / "static"
    readme = (folder / "README.md").read_text()
    for name, content_type in ASSETS.items():
        result = await _get(api, f"/api/docs/{name}")
        assert result.status_code == 200
        assert result.headers["content-type"] == content_type
        assert result.content == (folder / name).read_bytes()
        if name != "docs.js":
            digest = hashlib.sha256(result.content).hexdigest()
            assert f"| {name} | {digest} |" in readme, f"{name} differs from static/README.md"
        cached = await _get(api, f"/api/docs/{name}", **{"If-None-Match": result.headers["etag"]})
        assert cached.status_code == 304
    assert (folder / "swagger-ui.LICENSE").is_file()
    missing = await _get(api, "/api/docs/../../config.py")
    assert missing.status_code == 404
    unknown = await _get(api, "/api/docs/README.md")
    assert unknown.status_code == 404
    assert orjson.loads(unknown.content)["error"] == "not_found"
