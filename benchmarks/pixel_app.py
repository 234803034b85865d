"""The service as ``core_api.asgi`` builds it, with the pixel track fast path
(``core_api.pixel.fastpath.wrap``) in front: ``benchmarks/pixel.py`` measures it beside
``core-api serve`` for as long as the shipped ASGI module does not wrap it itself."""

from __future__ import annotations

import logging

from core_api.app import create_app
from core_api.config import Settings
from core_api.pixel.fastpath import wrap
from core_api.runtime import Runtime

settings = Settings.from_env()
logging.basicConfig(
    level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
)
runtime = Runtime.build(settings)
app = wrap(create_app(settings, runtime, manage_lifespan=True), runtime, settings)
