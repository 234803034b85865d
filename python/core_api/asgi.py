"""The one module-level ASGI app, for Granian: ``core_api.asgi:app``.

Settings come from ``CORE_API_*``; the runtime (database pool, Redis, shared memory) is
opened on the ASGI lifespan start-up of each worker process and closed on shutdown.
"""

from __future__ import annotations

import logging
from typing import Any

from .app import create_app
from .config import Settings
from .runtime import Runtime

log = logging.getLogger("core_api")


class LifespanApp:
    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.app is None:  # servers without lifespan support
            await self._start()
        await self.app(scope, receive, send)

    async def _start(self) -> None:
        settings = Settings.from_env()
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        self.runtime = await Runtime.open(settings)
        self.runtime.start_background()
        self.app = create_app(settings, self.runtime)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.runtime is not None:
                    await self.runtime.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = LifespanApp()
