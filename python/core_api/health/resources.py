"""/health: liveness and storage reachability, unauthenticated, for load balancers.

200 ``{"status": "ok"}`` when the database answers; when it cannot be reached the query
raises :class:`~core_api.storage.DatabaseUnavailable` and the error handler answers 503
``service_unavailable`` with Retry-After, within the connect timeout.
"""

from __future__ import annotations

import falcon
import falcon.asgi

from ..storage import Database


class Health:
    public = True
    scopes: dict[str, str] = {}

    def __init__(self, db: Database) -> None:
        self.db = db

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await self.db.ping()
        resp.media = {"status": "ok"}
        resp.status = falcon.HTTP_200
