"""The one module-level ASGI app, for Granian: ``core_api.asgi:app``.

Settings come from ``CORE_API_*`` (validated by the CLI before Granian starts). Each
worker process builds its runtime here and opens it (database pool, background tasks) on
the ASGI lifespan start-up; the Falcon app is served directly, with no wrapper per request.
"""

from __future__ import annotations

import logging

from .app import create_app
from .config import Settings
from .runtime import Runtime

settings = Settings.from_env()
logging.basicConfig(
    level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
)
app = create_app(settings, Runtime.build(settings), manage_lifespan=True)
