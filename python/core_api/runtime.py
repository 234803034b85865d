"""The process's dependencies, built once and passed to ``create_app`` (no globals)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from . import _native
from .api_keys.service import ApiKeyService
from .clock import Clock
from .config import Settings
from .entitlements.service import EntitlementService
from .events import Notifier
from .gateway.auth import Authenticator
from .gateway.idempotency import Store
from .gateway.invalidation import Invalidator
from .gateway.ratelimit import Limiter, LocalLimiter, RedisLimiter
from .jobs import JobRunner, Kind
from .local_files import ensure_secret_key, not_opened_yet, shared_memory_path
from .pixel.ingest import PixelIngest
from .pixel.sites import SiteDirectory
from .plans import Plans, load_plans
from .storage import Database, DatabaseUnavailable, Timeouts, create_database, instance
from .storage.migrate import migrate
from .webhooks.secrets import SecretBox
from .webhooks.service import WebhookService
from .workspaces.service import WorkspaceService

log = logging.getLogger("core_api.runtime")


@dataclass
class Runtime:
    settings: Settings
    db: Database
    plans: Plans
    clock: Clock
    shared: _native.SharedState
    redis: Any
    invalidator: Invalidator
    auth: Authenticator
    limiter: Limiter
    local_limiter: LocalLimiter
    idempotency: Store
    workspaces: WorkspaceService
    keys: ApiKeyService
    events: Notifier  # wakes this process's webhook delivery worker after a commit
    webhooks: WebhookService
    pixel_sites: SiteDirectory
    pixel_ingest: PixelIngest  # this process's event buffer and its writer
    entitlements: EntitlementService
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    runners: list[JobRunner] = field(default_factory=list)
    shm_path: str = ""  # the shared state's file, known once start() has opened it

    @classmethod
    def build(
        cls, settings: Settings, *, clock: Clock | None = None, db: Database | None = None
    ) -> Runtime:
        """Everything but the database pool and the shared state, which open in :meth:`start`
        (the secret key file of an embedded node is made on its first build)."""
        clock = clock or Clock()
        settings = ensure_secret_key(settings)
        plans = load_plans(settings.plans_file)
        timeouts = Timeouts(
            settings.pg_connect_timeout, settings.pg_statement_timeout, settings.pg_pool_timeout
        )
        db = db or create_database(settings.database_url, settings.pg_pool_size, timeouts)
        shared = not_opened_yet()  # opened by start(), once the database identity is read
        redis = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            redis = aioredis.from_url(
                settings.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        invalidator = Invalidator(shared, redis, settings.redis_prefix)
        cache = _native.KeyCache(settings.secret_key, settings.key_cache_size)
        local = LocalLimiter(shared, clock)
        ttl_ms = settings.idempotency_ttl_seconds * 1000
        # Idempotency records live in the database in every mode (never only in Redis).
        idempotency = Store(db, ttl_ms, settings.secret_key, settings.secret_key_previous)
        limiter: Limiter = local
        if redis is not None:
            limiter = RedisLimiter(redis, settings.redis_prefix, local, clock)
        events = Notifier()
        pixel_sites = SiteDirectory(db, invalidator)
        entitlements = EntitlementService(db, plans, clock, settings.upgrade_url, events)
        runtime = cls(
            settings=settings,
            db=db,
            plans=plans,
            clock=clock,
            shared=shared,
            redis=redis,
            invalidator=invalidator,
            auth=Authenticator(
                db,
                shared,
                cache,
                plans,
                clock,
                invalidator,
                previous_pepper=settings.secret_key_previous,
            ),
            limiter=limiter,
            local_limiter=local,
            idempotency=idempotency,
            workspaces=WorkspaceService(db, plans, clock, invalidator, events, entitlements),
            keys=ApiKeyService(
                db, plans, clock, settings.secret_key, invalidator, events, entitlements
            ),
            events=events,
            webhooks=WebhookService(
                db,
                plans,
                clock,
                settings,
                SecretBox(settings.secret_key, settings.secret_key_previous),
                events,
                entitlements,
            ),
            pixel_sites=pixel_sites,
            pixel_ingest=PixelIngest(
                settings,
                db,
                clock,
                pixel_sites,
                meter=entitlements.meter if settings.entitlements_metering else None,
            ),
            entitlements=entitlements,
        )
        runtime.auth.usage_listeners.append(runtime.keys.forget_usage)
        return runtime

    async def start(self, *, run_migrations: bool = False) -> None:
        await self.db.open()
        if run_migrations:
            await migrate(self.db)
        await self._open_shared_state()

    async def _open_shared_state(self) -> None:
        """Named after the database's own id, so that every URL spelling one database shares
        it; then handed to the parts built around it."""
        instance_id = "" if self.settings.shm_path else await instance.get_id(self.db)
        if instance_id is None:
            raise DatabaseUnavailable("the database has no schema yet; run `core-api migrate`")
        self.shm_path = shared_memory_path(self.settings, instance_id)
        self.shared = _native.SharedState(self.shm_path)
        for user in (self.invalidator, self.auth, self.local_limiter):
            user.shared = self.shared

    def cache_stats(self) -> dict[str, Any]:
        """This process's cache hit/miss counters (logged at shutdown for benchmarks)."""
        hits, misses = self.auth.cache.stats()
        return {
            "key_cache": {"hits": hits, "misses": misses, "size": len(self.auth.cache)},
            "workspace_access": self.workspaces.cache_stats(),
            "api_key_get": self.keys.cache_stats(),
            "list_pages": {
                "workspaces": self.workspaces.pages.stats(),
                "api_keys": self.keys.pages.stats(),
            },
            "invalidation": self.invalidator.stats(),
        }

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        db: Database | None = None,
        run_migrations: bool = False,
    ) -> Runtime:
        runtime = cls.build(settings, clock=clock, db=db)
        await runtime.start(run_migrations=run_migrations)
        return runtime

    def start_background(self, *, cluster_jobs: bool = False) -> None:
        """Per-process jobs (and the cross-node invalidation listener) in every serving
        process; cluster jobs too where this process is also a worker."""
        from .features import all_jobs

        kinds = [Kind.PER_PROCESS] + ([Kind.CLUSTER, Kind.WORKER] if cluster_jobs else [])
        for kind in kinds:
            runner = JobRunner(self, all_jobs(), kind)
            runner.start()
            self.runners.append(runner)
        if self.redis is not None:
            self.tasks.append(asyncio.create_task(self.invalidator.listen()))

    async def close(self) -> None:
        serving = bool(self.runners)  # a serving process, not a CLI command
        if serving:  # its hit rates, for benchmarks
            log.info("cache stats %s", json.dumps(self.cache_stats(), separators=(",", ":")))
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        for runner in self.runners:  # per-process jobs flush once more here
            await runner.stop()
        self.runners.clear()
        await self.pixel_ingest.shutdown()  # writes what is still buffered
        if serving:  # the last snapshot counts that last batch (the job's ran before it)
            from .metrics import write_snapshot

            with contextlib.suppress(OSError):
                await write_snapshot(self)
        await self.webhooks.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.close()
