"""``create_app``: the Falcon ASGI application, its routes and middleware."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
import falcon.media
import orjson

from . import errors, gctune
from .config import Settings
from .features import FEATURES
from .gateway.idempotency import IdempotencyGuard
from .gateway.middleware import GatewayMiddleware
from .runtime import Runtime
from .web.routing import IdConverter


def _json_handlers() -> falcon.media.Handlers:
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    return falcon.media.Handlers({falcon.MEDIA_JSON: json})


class _Lifespan:
    """Opens the runtime on ASGI start-up and closes it on shutdown (no per-request hooks)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def process_startup(self, scope: Any, event: Any) -> None:
        await self.runtime.start()
        self.runtime.start_background(cluster_jobs=self.runtime.settings.embedded_worker)
        gctune.tune()  # a serving process: start-up done, traffic next

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
            settings,
            runtime.plans,
            runtime.auth,
            runtime.limiter,
            runtime.workspaces,
            idempotency,
            meter=runtime.entitlements.meter if settings.entitlements_metering else None,
        )
    ]
    if manage_lifespan:
        middleware.append(_Lifespan(runtime))
    app: falcon.asgi.App[Any, Any] = falcon.asgi.App(middleware=middleware)
    app.req_options.media_handlers = _json_handlers()
    app.resp_options.media_handlers = _json_handlers()
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)

    app.router_options.converters["id"] = IdConverter
    for feature in FEATURES:
        feature.register(app, runtime, settings)
    return app
