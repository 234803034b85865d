"""The one module-level ASGI app, for Granian: ``core_api.asgi:app``.

Settings come from ``CORE_API_*`` (validated by the CLI before Granian starts). Each
worker process builds its runtime here and opens it (database pool, background tasks) on
the ASGI lifespan start-up. The highest-volume routes (``POST /api/v1/pixel/track``,
``GET /api/v1/entitlements/check``) are answered by ASGI fast paths in front of Falcon
(web/front.py: the same rules, statuses, bodies and headers as the Falcon routes, tested
side by side); every other request and the lifespan go straight to the Falcon app.
"""

from __future__ import annotations

from . import logs
from .app import create_app
from .config import Settings
from .features import front
from .runtime import Runtime

settings = Settings.from_env()
logs.configure(settings)  # JSON or text, request ids, redaction (core_api/logs.py)
runtime = Runtime.build(settings)
app = front(create_app(settings, runtime, manage_lifespan=True), runtime, settings)
