"""``GET /api/v1/openapi.json`` and the docs page ``GET /api/docs`` with its assets.

All public (no key, no rate limit: static bytes built once per process), each with a
strong ETag (a 304 on revalidation) and a gzip variant. The docs page loads only its own
assets (``static/``, vendored Swagger UI), under a CSP that allows nothing else.
"""

from __future__ import annotations

import html
from importlib import resources

import falcon
import falcon.asgi

from ..web.static import StaticBody, send
from .document import document_bytes

# The page and its script/style: no inline script, no other origin. Swagger UI sets inline
# style attributes and draws some icons from data: URIs.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
}
ASSET_CACHE = "public, max-age=3600"
DOCUMENT_CACHE = "no-cache"  # always revalidated (a 304 costs nothing): a deploy changes it

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>core-api API reference</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}/api/docs/swagger-ui.css">
</head>
<body>
<noscript>This page needs JavaScript. The document itself is at
<a href="{root}/api/v1/openapi.json">{root}/api/v1/openapi.json</a>.</noscript>
<div id="swagger-ui" data-spec-url="{root}/api/v1/openapi.json"></div>
<script src="{root}/api/docs/swagger-ui-bundle.js"></script>
<script src="{root}/api/docs/docs.js"></script>
</body>
</html>
"""


def _send(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    payload: StaticBody,
    content_type: str,
    headers: list[tuple[str, str]],
) -> None:
    send(req, resp, payload, content_type, [*headers, *_COMMON_HEADERS])


class OpenApiDocument:
    public = True

    def __init__(self) -> None:
        self.payload = StaticBody.of(document_bytes())

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        headers = [("Cache-Control", DOCUMENT_CACHE), ("Access-Control-Allow-Origin", "*")]
        _send(req, resp, self.payload, "application/json", headers)


class DocsPage:
    public = True

    def __init__(self) -> None:
        self.pages: dict[str, StaticBody] = {}  # by root path (one in practice)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        root = req.root_path.rstrip("/")
        payload = self.pages.get(root)
        if payload is None:
            payload = StaticBody.of(_PAGE.format(root=html.escape(root)).encode())
            if len(self.pages) < 16:
                self.pages[root] = payload
        headers = [
            ("Cache-Control", "no-cache"),
            ("Content-Security-Policy", DOCS_CSP),
            ("X-Frame-Options", "DENY"),
        ]
        _send(req, resp, payload, "text/html; charset=utf-8", headers)


class DocsAsset:
    public = True

    def __init__(self) -> None:
        folder = resources.files(__package__ or "core_api.openapi") / "static"
        self.assets = {name: StaticBody.of((folder / name).read_bytes()) for name in ASSETS}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        payload = self.assets.get(name)
        if payload is None:
            raise falcon.HTTPNotFound()
        headers = [("Cache-Control", ASSET_CACHE), ("Cross-Origin-Resource-Policy", "same-origin")]
        _send(req, resp, payload, ASSETS[name], headers)
