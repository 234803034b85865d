"""The bare baseline: a Falcon ASGI app with one route and a fixed JSON body.

``GET /api/v1/workspaces/1`` returns a body shaped and sized like the real service's
workspace response (about 190 bytes), serialised per request with the same orjson media
handler. (``BENCH_BASELINE_MIDDLEWARE`` / ``BENCH_BASELINE_HEADERS`` add no-op middleware
and extra headers, for experiments; both default to 0.) Served by the peak runner with
exactly the Granian flags ``core-api serve`` uses::

    python -m granian --interface asgi --host 127.0.0.1 --port 8001 --workers 1 \
        --loop uvloop --no-ws --log-level warning benchmarks.baseline_app:app
"""

from __future__ import annotations

import os

import falcon
import falcon.asgi
import falcon.media
import orjson

BODY = {
    "data": {
        "id": 1,
        "name": "bench",
        "slug": "bench",
        "tier": "enterprise",
        "settings": {"timezone": "UTC", "locale": "en_GB"},
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
}


class NoopMiddleware:
    """For experiments only (``BENCH_BASELINE_MIDDLEWARE=N``): what N middleware cost."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        pass

    async def process_resource(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: object, params: dict
    ) -> None:
        pass

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: object, ok: bool
    ) -> None:
        pass


EXTRA_HEADERS = [
    (f"X-Bench-{i}", "x" * 24) for i in range(int(os.environ.get("BENCH_BASELINE_HEADERS", "0")))
]


class Workspace:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = BODY
        for name, value in EXTRA_HEADERS:
            resp.set_header(name, value)


class Health:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"status": "ok"}


def create_app() -> falcon.asgi.App:
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    handlers = falcon.media.Handlers({falcon.MEDIA_JSON: json})
    middleware = int(os.environ.get("BENCH_BASELINE_MIDDLEWARE", "0"))
    app = falcon.asgi.App(middleware=[NoopMiddleware() for _ in range(middleware)])
    app.req_options.media_handlers = handlers
    app.resp_options.media_handlers = handlers
    app.add_route("/api/v1/workspaces/1", Workspace())
    app.add_route("/health", Health())
    return app


app = create_app()
