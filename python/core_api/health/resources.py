"""Unauthenticated probes for load balancers and orchestrators (never rate-limited).

- ``/health``: 200 ``{"status": "ok"}`` when the database answers; when it cannot be
  reached the query raises :class:`~core_api.storage.DatabaseUnavailable` and the error
  handler answers 503 ``service_unavailable`` with Retry-After, within the connect timeout.
- ``/healthz``: liveness. 200 ``{"status": "ok"}`` whenever the process can answer; no I/O.
- ``/readyz``: readiness. The database answers, Redis answers (when configured) and
  every migration this build knows is applied. 200 ``{"status": "ready", "checks":
  {...}}``, else 503 ``{"status": "unavailable", "checks": {...}}`` naming what failed.
  The checks run concurrently, each bounded by ``CHECK_TIMEOUT`` seconds, so the answer
  comes within about that even when PostgreSQL or Redis hang.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from ..storage import Database
from ..storage.migrate import available

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("core_api.health")

CHECK_TIMEOUT = 2.0  # seconds, per check (they run at once)


class Health:
    public = True
    scopes: dict[str, str] = {}

    def __init__(self, db: Database) -> None:
        self.db = db

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await self.db.ping()
        resp.media = {"status": "ok"}
        resp.status = falcon.HTTP_200


class Live:
    public = True
    scopes: dict[str, str] = {}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"status": "ok"}
        resp.status = falcon.HTTP_200
        resp.cache_control = ["no-store"]


class Ready:
    public = True
    scopes: dict[str, str] = {}

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.latest = max((m.version for m in available(runtime.db.dialect)), default=0)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        names = ["database", "migrations"]
        probes = [self._database(), self._migrations()]
        if self.runtime.redis is not None:
            names.append("redis")
            probes.append(self._redis())
        results = await asyncio.gather(
            *(_bounded(n, p) for n, p in zip(names, probes, strict=True))
        )
        checks = dict(zip(names, results, strict=True))
        ready = all(check["ok"] for check in checks.values())
        resp.media = {"status": "ready" if ready else "unavailable", "checks": checks}
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.cache_control = ["no-store"]

    async def _database(self) -> dict[str, Any]:
        await self.runtime.db.ping()
        return {"ok": True}

    async def _migrations(self) -> dict[str, Any]:
        row = await self.runtime.db.fetch_one(
            "SELECT MAX(version) AS version FROM schema_migrations"
        )
        applied = int(row["version"]) if row is not None and row["version"] is not None else 0
        if applied < self.latest:
            return {
                "ok": False,
                "error": f"schema at migration {applied}, this build needs {self.latest}: "
                "run `core-api migrate`",
                "applied": applied,
                "expected": self.latest,
            }
        # A newer schema (a rolling deploy ahead of this node) is ready: migrations only add.
        return {"ok": True, "applied": applied, "expected": self.latest}

    async def _redis(self) -> dict[str, Any]:
        await self.runtime.redis.ping()
        return {"ok": True}


async def _bounded(name: str, probe: Any) -> dict[str, Any]:
    """A probe's answer, or ``{"ok": false, "error": ...}`` when it failed or took longer
    than CHECK_TIMEOUT (never an exception, never a hang). The public answer says what
    failed, not where (hosts, ports): the details go to the log."""
    try:
        result: dict[str, Any] = await asyncio.wait_for(probe, CHECK_TIMEOUT)
    except TimeoutError:
        log.warning("readyz: %s did not answer within %g s", name, CHECK_TIMEOUT)
        return {"ok": False, "error": f"no answer within {CHECK_TIMEOUT:g} s"}
    except Exception as exc:
        log.warning("readyz: %s unavailable: %s", name, exc)
        return {"ok": False, "error": "unreachable"}
    return result
