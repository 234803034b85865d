"""The service as ``core_api.asgi`` builds it, but without the pixel track fast path
(``core_api.pixel.fastpath.wrap``): ``POST /api/v1/pixel/track`` is answered by the
Falcon route. ``benchmarks/pixel.py`` measures it beside ``core-api serve`` to show what
the fast path buys."""

from __future__ import annotations

from core_api import logs
from core_api.app import create_app
from core_api.config import Settings
from core_api.runtime import Runtime

settings = Settings.from_env()
logs.configure(settings)
runtime = Runtime.build(settings)
app = create_app(settings, runtime, manage_lifespan=True)
