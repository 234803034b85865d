"""``create_app``: the Falcon ASGI application, its routes and middleware."""

from __future__ import annotations

import asyncio
from typing import Any

import falcon
import falcon.asgi
import falcon.media
import orjson

from . import errors
from .api_keys.resources import ApiKeyCollection, ApiKeyItem, ApiKeyRotation
from .config import Settings
from .gateway.idempotency import IdempotencyGuard
from .gateway.middleware import GatewayMiddleware
from .health.resources import Health
from .pixel.resources import PixelConfig
from .runtime import Runtime
from .worker import run_jobs
from .workspaces.resources import WorkspaceCollection, WorkspaceItem

ID = "{id:int(min=1, max=9223372036854775807)}"


def _json_handlers() -> falcon.media.Handlers:
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    return falcon.media.Handlers({falcon.MEDIA_JSON: json})


class _Lifespan:
    """Opens the runtime on ASGI start-up and closes it on shutdown (no per-request hooks)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def process_startup(self, scope: Any, event: Any) -> None:
        await self.runtime.start()
        self.runtime.start_background()
        if self.runtime.settings.embedded_worker:
            self.runtime.tasks.append(asyncio.create_task(run_jobs(self.runtime)))

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        await self.runtime.close()


def create_app(
    settings: Settings, runtime: Runtime, *, manage_lifespan: bool = False
) -> falcon.asgi.App[Any, Any]:
    """Build the app around a :class:`Runtime`: an opened one (tests, embedding), or one
    the app opens and closes itself on the ASGI lifespan (``manage_lifespan=True``)."""
    idempotency = IdempotencyGuard(runtime.idempotency, runtime.clock, settings)
    middleware: list[Any] = [
        GatewayMiddleware(
            settings, runtime.plans, runtime.auth, runtime.limiter, runtime.workspaces, idempotency
        )
    ]
    if manage_lifespan:
        middleware.append(_Lifespan(runtime))
    app: falcon.asgi.App[Any, Any] = falcon.asgi.App(middleware=middleware)
    app.req_options.media_handlers = _json_handlers()
    app.resp_options.media_handlers = _json_handlers()
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)

    ws, keys = runtime.workspaces, runtime.keys
    app.add_route("/health", Health(runtime.db))
    app.add_route("/api/v1/pixel/config", PixelConfig())
    app.add_route("/api/v1/workspaces", WorkspaceCollection(settings, ws))
    app.add_route(f"/api/v1/workspaces/{ID}", WorkspaceItem(settings, ws))
    app.add_route("/api/v1/api-keys", ApiKeyCollection(settings, ws, keys))
    app.add_route(f"/api/v1/api-keys/{ID}", ApiKeyItem(ws, keys))
    app.add_route(f"/api/v1/api-keys/{ID}/rotate", ApiKeyRotation(settings, ws, keys))
    return app
