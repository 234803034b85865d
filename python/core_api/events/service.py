"""Publishing events: the outbox write and the wake-up of local delivery workers.

``publish(tx, ...)`` only writes, inside the caller's transaction: the event row (its
envelope encoded once) and one pending delivery per active endpoint of the workspace
whose patterns match the type. An event that matches no endpoint and carries no publisher
id is not stored at all: nothing could read it. The change that caused the event and
the event commit or roll back together. After the commit the caller calls :meth:`Notifier.notify`
(``runtime.events.notify()``) so this process's delivery worker starts at once; workers
also poll, so other processes and nodes pick the work up within a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ..errors import ValidationFailed
from ..storage.base import Executor
from ..web.bodies import json_problem
from . import repo
from .patterns import matches, parse_stored, type_problem

DEFAULT_MAX_PAYLOAD_BYTES = 65_536  # settings.webhook_max_payload_bytes for POST /events
MAX_DATA_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Event:
    """A published event. ``deliveries`` is how many endpoints it was queued for;
    ``duplicate`` means an earlier event with the same publisher id was returned instead."""

    id: str
    type: str
    workspace_id: int
    timestamp: int  # epoch ms
    payload: bytes  # the envelope, exactly as delivered
    deliveries: int
    duplicate: bool = False


def new_event_id() -> str:
    return "evt_" + os.urandom(12).hex()


def iso_ms(ms: int) -> str:
    """``2026-01-15T10:30:00.123Z``: the envelope's timestamp, to the millisecond."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def envelope(event_id: str, event_type: str, now: int, workspace_id: int, data: Any) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": event_type,
            "timestamp": iso_ms(now),
            "workspace_id": workspace_id,
            "data": data,
        }
    )


async def publish(
    tx: Executor,
    *,
    workspace_id: int,
    type: str,
    data: dict[str, Any],
    now: int,
    event_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Event:
    """Write an event and its deliveries in ``tx`` (see the module doc). ``event_id`` is
    the publisher's own id: a second publish with it in the same workspace writes nothing
    and returns the first event (``duplicate=True``). Raises ValidationFailed for a bad
    type or a payload over ``max_bytes`` (nothing written)."""
    if problem := type_problem(type):
        raise ValidationFailed.field("type", f"The type {problem}.")
    if problem := json_problem(data, MAX_DATA_DEPTH):
        raise ValidationFailed.field("data", f"The data {problem}.")
    public_id = new_event_id()
    try:
        payload = envelope(public_id, type, now, workspace_id, data)
    except TypeError as exc:  # not JSON-encodable: a caller's bug, said plainly
        raise ValidationFailed.field("data", f"The data must be JSON: {exc}") from None
    if len(payload) > max_bytes:
        raise ValidationFailed.field(
            "data", f"The event may not be larger than {max_bytes} bytes once encoded."
        )
    targets = [
        endpoint_id
        for endpoint_id, patterns in await repo.active_endpoints(tx, workspace_id)
        if matches(parse_stored(patterns), type)
    ]
    if not targets and event_id is None:
        # Nothing would ever read the row (events are reached only through their
        # deliveries, and there is no publisher id to deduplicate on): skip the write.
        return Event(public_id, type, workspace_id, now, payload, 0)
    text = payload.decode()
    row_id = await repo.insert(
        tx,
        public_id=public_id,
        workspace_id=workspace_id,
        event_type=type,
        payload=text,
        dedup_key=event_id,
        now=now,
    )
    if row_id is None:
        assert event_id is not None
        first = await repo.find_by_dedup(tx, workspace_id, event_id)
        if first is None:  # deleted by the retention purge between the two statements
            raise ValidationFailed.field("id", "The event id was just used; retry.")
        return Event(
            first.public_id,
            first.type,
            workspace_id,
            first.created_at,
            first.payload.encode(),
            0,
            duplicate=True,
        )
    if targets:
        await repo.insert_deliveries(tx, row_id, targets, now)
        global _queued
        _queued += len(targets)
    return Event(public_id, type, workspace_id, now, payload, len(targets))


# Deliveries ``publish`` has queued in this process (some in transactions that may yet roll
# back): ``Notifier.notify`` wakes the worker only when this moved since its last call.
_queued = 0


class Notifier:
    """Wakes this process's delivery worker after a commit (``notify``). Cheap and
    loop-agnostic: the asyncio.Event is made by the waiting worker's loop."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._seen = _queued

    def notify(self) -> None:
        """After a commit that may have published: wakes the worker if any ``publish``
        since the last call queued a delivery. Most writes publish an event no endpoint
        takes (nothing is written), and each needless wake cost the worker a claim query:
        under the mixed load, one more database round trip per write."""
        if _queued != self._seen:
            self._seen = _queued
            self.wake()

    def wake(self) -> None:
        """Wake the worker unconditionally (deliveries queued other than by ``publish``:
        a manual retry, deliveries handed back)."""
        if self._event is not None:
            self._event.set()

    async def wait(self, seconds: float) -> None:
        """Until notified or ``seconds`` have passed."""
        if self._event is None:
            self._event = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
        self._event.clear()
