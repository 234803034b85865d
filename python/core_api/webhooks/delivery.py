"""The delivery worker: claims due deliveries with leases, sends them signed, records
every attempt, retries on the schedule and disables endpoints that are gone or keep
failing.

One :class:`Dispatcher` runs per worker process (``core-api worker``, and each ``serve``
process unless ``CORE_API_EMBEDDED_WORKER=false``). Any number of them may share one
database:

- **Claims.** A claim leases a batch of due rows (``locked_until``/``locked_by``): one
  ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` on PostgreSQL, the same
  statement under SQLite's write lock. Leases are renewed while held, so a live worker
  never loses one, and a killed worker's rows are claimed again once its leases expire:
  nothing is lost, and delivery is at least once.
- **Isolation.** At most ``webhook_max_in_flight`` requests are in flight per process and
  ``webhook_endpoint_concurrency`` per endpoint; an endpoint with ``_WINDOW`` deliveries
  already held is left out of further claims, so a slow or dead endpoint occupies a few
  slots and never the batch.
- **Order.** Each endpoint's held deliveries are sent in (due time, id) order; with the
  default per-endpoint concurrency of 1 they arrive in creation order when nothing fails.
  A failed delivery waits for its retry while later ones go ahead.
- **Outcomes** are written in batches (one transaction per flush, every few
  milliseconds under load): a 2xx is ``success``; a 410 fails the delivery and disables
  the endpoint; anything else is retried on ``webhook_retry_schedule`` (+-20 % jitter,
  ``Retry-After`` honoured up to ``webhook_retry_after_max_seconds``) and then ``failed``.
  ``webhook_disable_after_failures`` consecutive failed attempts spanning at least
  ``webhook_disable_after_hours`` disable the endpoint. Disabling fails its queued
  deliveries and publishes ``webhook.endpoint.disabled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag

from ..clock import Clock
from ..config import Settings
from ..events.service import Notifier, publish
from ..jobs import holder_id
from ..metrics.registry import REGISTRY
from ..storage import Database, DatabaseUnavailable
from ..storage.base import Executor
from . import repo, signing
from .repo import Claimed
from .secrets import SecretBox
from .service import live_keys, wall_ms
from .transport import Outcome, Transport

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("core_api.webhooks")

BATCH = 500  # deliveries per claim
POLL_SECONDS = 0.25  # idle wait between claims when nobody notifies
FLUSH_DELAY = 0.01  # gather outcomes this long before writing them in one transaction
_WINDOW_PER_SLOT = 32  # deliveries held per endpoint, per allowed concurrent request
_MAX_KEYS_CACHED = 10_000


@dataclass(slots=True)
class _Result:
    item: Claimed
    outcome: Outcome | None  # None: not sent (the endpoint was inactive when claimed)
    at: int  # clock ms when the attempt ended


def retry_delay(
    schedule: tuple[int, ...],
    attempt: int,
    retry_after_s: float | None,
    retry_after_cap: int,
    jitter: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the retry after failed attempt number ``attempt`` (1-based), or None
    when the schedule is spent. +-20 % jitter; a Retry-After asking for longer is
    honoured up to the cap."""
    if attempt > len(schedule):
        return None
    delay = schedule[attempt - 1] * (0.8 + 0.4 * jitter())
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, float(retry_after_cap)))
    return delay


_DELIVERIES = "core_api_webhook_deliveries_total"
_OUTCOMES = {
    name: (("outcome", name),)
    for name in ("success", "http_error", "network_error", "gone", "skipped")
}


def _outcome_labels(outcome: Outcome | None) -> tuple[tuple[str, str], ...]:
    if outcome is None:
        return _OUTCOMES["skipped"]  # the endpoint was inactive when claimed
    if outcome.ok:
        return _OUTCOMES["success"]
    if outcome.status is None:
        return _OUTCOMES["network_error"]
    return _OUTCOMES["gone" if outcome.status == 410 else "http_error"]


def _storable(text: str | None) -> str | None:
    """A response body or error as both backends store it (PostgreSQL text holds no NUL)."""
    return None if text is None else text.replace("\x00", "\ufffd")


class Dispatcher:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        notifier: Notifier,
        box: SecretBox,
        *,
        transport: Transport | None = None,
        holder: str | None = None,
    ) -> None:
        self.db, self.clock, self.settings, self.notifier, self.box = (
            db,
            clock,
            settings,
            notifier,
            box,
        )
        self.holder = holder or holder_id()
        self.max_in_flight = settings.webhook_max_in_flight
        self.per_endpoint = settings.webhook_endpoint_concurrency
        self.window = _WINDOW_PER_SLOT * self.per_endpoint
        # Room for two claims: the next batch is claimed while one is being sent, and a
        # row is held until its outcome is written. With room for one, sending stopped
        # at every claim and every flush (measured: 64 in flight half the time, 0 the
        # other half).
        self.max_held = max(2 * BATCH, 8 * self.max_in_flight)
        self.lease_ms = settings.webhook_lease_seconds * 1000
        self.timeout = float(settings.webhook_timeout_seconds)
        self.transport = transport or Transport(
            settings, max_connections=self.max_in_flight, per_host=self.max_in_flight
        )
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._held: dict[int, Claimed] = {}  # delivery id -> leased row (until flushed)
        self._held_per_endpoint: Counter[int] = Counter()
        self._queues: dict[int, deque[Claimed]] = {}
        self._pumps: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._claiming: asyncio.Future[list[Claimed]] | None = None  # the claim statement
        self._gone: set[int] = set()  # answered 410: send nothing more before the flush
        self._results: list[_Result] = []
        self._results_ready = asyncio.Event()
        self._keys: dict[tuple[Any, ...], list[bytes]] = {}
        self.sent = 0  # attempts made by this dispatcher (benchmarks, tests)

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> Dispatcher:
        return cls(
            runtime.db,
            runtime.clock,
            runtime.settings,
            runtime.events,
            SecretBox(runtime.settings.secret_key, runtime.settings.secret_key_previous),
        )

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and deliver until cancelled; then give back what was not sent."""
        flusher = asyncio.create_task(self._flush_loop())
        renewer = asyncio.create_task(self._renew_loop())
        try:
            while True:
                try:
                    claimed = await self._claim_once()
                except DatabaseUnavailable as exc:
                    log.warning("webhook claim: database unavailable: %s", exc)
                    claimed = 0
                    await asyncio.sleep(1.0)
                if claimed < BATCH:
                    await self.notifier.wait(POLL_SECONDS)
        finally:
            await self._shutdown(flusher, renewer)

    async def _shutdown(self, *loops: asyncio.Task[None]) -> None:
        for task in (*loops, *self._tasks):
            task.cancel()
        for task in (*loops, *self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._claiming is not None:
            with contextlib.suppress(Exception):
                await self._claiming
        with contextlib.suppress(DatabaseUnavailable):
            await self._flush()
        # Everything still leased to this holder goes back: what is held and unsent, and
        # the rows of a claim the stop cancelled after its UPDATE ran (never read back, so
        # not in _held; seen as leases left behind by a graceful stop).
        with contextlib.suppress(DatabaseUnavailable):
            await repo.release_holder(self.db, self.holder)
        self._held.clear()
        await self.transport.close()

    async def _claim_once(self) -> int:
        room = self.max_held - len(self._held)
        if room <= 0:
            return 0
        now, wall = self.clock.now_ms(), wall_ms()
        full = [e for e, n in self._held_per_endpoint.items() if n >= self.window]
        # Shielded: a stop that cancelled the claim mid-statement could see the UPDATE
        # commit after it gave its leases back (seen: a whole batch still leased after a
        # graceful stop). The stop waits for this statement, then gives everything back.
        self._claiming = asyncio.ensure_future(
            repo.claim(
                self.db,
                holder=self.holder,
                now=now,
                lease_now=wall,
                lease_until=wall + self.lease_ms,
                limit=min(room, BATCH),
                exclude=full,
            )
        )
        claimed = await asyncio.shield(self._claiming)
        extra: list[int] = []
        touched: set[int] = set()
        for item in claimed:
            endpoint = item.endpoint_id
            if item.id in self._held:  # ours already (a lease renewal came late): held once
                continue
            if self._held_per_endpoint[endpoint] >= self.window:
                extra.append(item.id)
                continue
            self._held[item.id] = item
            self._held_per_endpoint[endpoint] += 1
            if not item.is_active:
                self._results.append(_Result(item, None, now))
                self._results_ready.set()
                continue
            self._queues.setdefault(endpoint, deque()).append(item)
            touched.add(endpoint)
        # Pumps start before any await: a pump that drains its queue during one removes
        # that queue, and items appended here must not be left without a pump.
        for endpoint in touched:
            self._start_pumps(endpoint)
        if extra:  # more than one endpoint's window: back to the queue for later
            await repo.release(self.db, extra, self.holder)
        return len(claimed)

    def _start_pumps(self, endpoint: int) -> None:
        queue = self._queues[endpoint]
        while self._pumps[endpoint] < min(self.per_endpoint, len(queue)):
            self._pumps[endpoint] += 1
            task = asyncio.create_task(self._pump(endpoint, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, endpoint: int, queue: deque[Claimed]) -> None:
        """Sends one endpoint's held deliveries in order, one request at a time."""
        try:
            while queue and endpoint not in self._gone:
                async with self._slots:
                    if not queue or endpoint in self._gone:
                        break
                    item = queue.popleft()
                    outcome = await self._send(item)
                if outcome.status == 410:
                    self._gone.add(endpoint)
                self.sent += 1
                self._results.append(_Result(item, outcome, self.clock.now_ms()))
                self._results_ready.set()
        finally:
            self._pumps[endpoint] -= 1
            if self._pumps[endpoint] <= 0:
                del self._pumps[endpoint]
                if not queue and self._queues.get(endpoint) is queue:
                    del self._queues[endpoint]

    async def _send(self, item: Claimed) -> Outcome:
        try:
            keys = self._signing_keys(item)
        except (ValueError, InvalidTag) as exc:  # a secret sealed under another secret_key
            return Outcome(None, "", 0, f"signing: cannot open the secret ({exc!r})", None)
        # The signature's timestamp is real time (receivers compare it with their clock).
        headers = signing.headers(keys, item.event_id, int(time.time()), item.payload)
        return await self.transport.post(item.url, headers, item.payload, self.timeout)

    def _signing_keys(self, item: Claimed) -> list[bytes]:
        now = self.clock.now_ms()
        previous_live = (
            item.previous_secret_expires_at is not None and item.previous_secret_expires_at > now
        )
        cache_key = (
            item.workspace_id,
            item.secret_sealed,
            item.previous_secret_sealed,
            previous_live,
        )
        keys = self._keys.get(cache_key)
        if keys is None:
            keys = live_keys(
                self.box,
                item.workspace_id,
                item.secret_sealed,
                item.previous_secret_sealed,
                item.previous_secret_expires_at,
                now,
            )
            if len(self._keys) >= _MAX_KEYS_CACHED:
                self._keys.clear()
            self._keys[cache_key] = keys
        return keys

    async def _renew_loop(self) -> None:
        """Keeps the leases of everything held (queued, in flight, awaiting its write)."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            ids = list(self._held)
            if not ids:
                continue
            try:
                await repo.extend_leases(self.db, ids, self.holder, wall_ms() + self.lease_ms)
            except DatabaseUnavailable as exc:
                log.warning("webhook leases: database unavailable: %s", exc)

    # -- outcomes --------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            await asyncio.sleep(FLUSH_DELAY)
            self._results_ready.clear()
            try:
                await self._flush()
            except DatabaseUnavailable as exc:
                log.warning("webhook outcomes: database unavailable, will retry: %s", exc)
                await asyncio.sleep(1.0)
                self._results_ready.set()
            except Exception:
                # Not an outage: write the outcomes one by one, so that one that cannot be
                # written never holds up the others (it is retried after its lease).
                log.exception("webhook outcomes could not be written together; one by one")
                try:
                    await self._flush_each()
                except DatabaseUnavailable:
                    await asyncio.sleep(1.0)
                    self._results_ready.set()

    async def _flush(self) -> None:
        results, self._results = self._results, []
        if not results:
            return
        try:
            await self._write_batch(results)
        except BaseException:
            self._results[:0] = results  # written next time (the leases are still ours)
            raise

    async def _flush_each(self) -> None:
        results, self._results = self._results, []
        for n, result in enumerate(results):
            try:
                await self._write_batch([result])
            except DatabaseUnavailable:
                self._results[:0] = results[n:]
                raise
            except Exception:
                log.exception("webhook outcome of delivery %s dropped", result.item.id)
                self._forget(result.item)

    async def _write_batch(self, results: list[_Result]) -> None:
        disabled: set[int] = set()
        async with self.db.transaction() as tx:
            await self._write(tx, results, disabled)
        for result in results:
            self._forget(result.item)
            REGISTRY.inc(_DELIVERIES, _outcome_labels(result.outcome))  # metrics, once written
        idle_gone = {e for e in self._gone if e not in self._pumps}
        self._gone -= idle_gone
        unsent: list[int] = []
        for endpoint in disabled | idle_gone:
            # Queued deliveries of a disabled endpoint were failed by the disable; those of
            # one that answered 410 but was not disabled here go back to the queue.
            for item in self._queues.pop(endpoint, deque()):
                unsent.append(item.id)
                self._forget(item)
        if unsent:
            await repo.release(self.db, unsent, self.holder)
        self.notifier.wake()  # room for the next claim (and any event just published)

    def _forget(self, item: Claimed) -> None:
        if self._held.pop(item.id, None) is not None:
            self._held_per_endpoint[item.endpoint_id] -= 1
            if self._held_per_endpoint[item.endpoint_id] <= 0:
                del self._held_per_endpoint[item.endpoint_id]

    async def _write(self, tx: Executor, results: list[_Result], disabled: set[int]) -> None:
        now = self.clock.now_ms()
        attempts: list[tuple[Any, ...]] = []
        succeeded: dict[int, list[int]] = {}
        skipped: list[int] = []
        by_endpoint: dict[int, list[_Result]] = {}
        for result in results:
            by_endpoint.setdefault(result.item.endpoint_id, []).append(result)
        clean: dict[int, int] = {}  # endpoints with only successes here: one UPDATE for all
        for endpoint, endpoint_results in by_endpoint.items():
            if all(r.outcome is not None and r.outcome.ok for r in endpoint_results):
                clean[endpoint] = len(endpoint_results)
            successes, last_success = 0, now
            for result in endpoint_results:  # in completion order: the failure run is exact
                item, outcome = result.item, result.outcome
                if outcome is None:
                    skipped.append(item.id)
                    continue
                attempts.append(
                    (
                        item.id,
                        item.attempt + 1,
                        outcome.status,
                        _storable(outcome.body) or None,
                        _storable(outcome.error),
                        outcome.duration_ms,
                        result.at,
                    )
                )
                if outcome.ok:
                    assert outcome.status is not None
                    succeeded.setdefault(outcome.status, []).append(item.id)
                    successes, last_success = successes + 1, result.at
                    continue
                if successes:
                    await repo.record_successes(tx, endpoint, successes, last_success)
                    successes = 0
                await self._failed(tx, result, outcome, disabled)
            if successes and endpoint not in clean:
                await repo.record_successes(tx, endpoint, successes, last_success)
        if clean:
            await repo.record_success_runs(tx, clean, now)
        for code, ids in succeeded.items():
            await repo.mark_succeeded(tx, ids, self.holder, code, now)
        if skipped:
            await repo.mark_skipped(tx, skipped, self.holder, now)
        await repo.insert_attempts(tx, attempts)

    async def _failed(
        self, tx: Executor, result: _Result, outcome: Outcome, disabled: set[int]
    ) -> None:
        item, at, settings = result.item, result.at, self.settings
        attempt = item.attempt + 1
        run = await repo.record_failure(tx, item.endpoint_id, at)
        reason = None
        if outcome.status == 410:
            delay = None
            reason = "The endpoint answered 410 Gone."
        else:
            delay = retry_delay(
                settings.webhook_retry_schedule,
                attempt,
                outcome.retry_after_s,
                settings.webhook_retry_after_max_seconds,
            )
            if (
                run is not None
                and run["consecutive_failures"] >= settings.webhook_disable_after_failures
                and at - int(run["failing_since"])
                >= settings.webhook_disable_after_hours * 3_600_000
            ):
                reason = (
                    f"{run['consecutive_failures']} consecutive failed attempts over "
                    f"{(at - int(run['failing_since'])) / 3_600_000:.1f} hours."
                )
        await repo.mark_failed_attempt(
            tx,
            item.id,
            self.holder,
            code=outcome.status,
            retry_at=None if delay is None else at + int(delay * 1000),
            now=at,
        )
        if (
            reason is None
            or run is None
            or not await repo.disable(tx, item.endpoint_id, reason, at)
        ):
            return
        disabled.add(item.endpoint_id)
        log.info("webhook endpoint %s disabled: %s", item.endpoint_id, reason)
        await publish(
            tx,
            workspace_id=int(run["workspace_id"]),
            type="webhook.endpoint.disabled",
            data={"endpoint": {"id": item.endpoint_id, "url": run["url"], "reason": reason}},
            now=at,
        )
