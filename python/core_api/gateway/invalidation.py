"""Targeted cache invalidation that holds across processes and nodes.

A committed change names what it made stale: ``("key", id)``, ``("workspace", id)`` (incl.
memberships in it and keys homed in it) or ``("user", id)`` (incl. the user's list of
workspaces). :meth:`Invalidator.changed` appends the targets to the host's invalidation
log, a ring in the shared-memory file that every worker maps. Each process remembers how
far it has applied the log; :meth:`Invalidator.sync`, called once per request, costs one
atomic load when nothing changed, else hands each new target to the listeners of its kind
(the caches), so only the entries that depend on the change are evicted. A process that
fell further behind than the ring holds, or meets a flush entry, flushes everything.

Across nodes the targets are also published on Redis (``<node>|k12,w3,u7``; ``*`` for a
full flush) and each process's listener appends them to its own host's log (bounded by the
pub/sub delivery time). Whenever the listener (re)subscribes, changes may have been
missed: the host flushes everything.

Caches guard their inserts with :meth:`mark` before a read and :meth:`untouched` after it:
a value read before a change to what it depends on is never cached after that change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from typing import Any, Literal

from .. import _native

log = logging.getLogger("core_api.invalidation")

# key, workspace, user: cached data about that thing is stale. key_list (a workspace id)
# and workspace_list (a user id): only that list's totals are; nothing cached about any
# one key or workspace changed, so a create does not evict its caller's own entries.
# pixel_site: a site's settings (the pixel site directory).
Kind = Literal["key", "workspace", "user", "key_list", "workspace_list", "pixel_site"]
Target = tuple[Kind, int]
KINDS: tuple[Kind, ...] = (
    "key",
    "workspace",
    "user",
    "key_list",
    "workspace_list",
    "pixel_site",
)
_CODES: dict[str, Kind] = {
    "k": "key",
    "w": "workspace",
    "u": "user",
    "l": "key_list",
    "m": "workspace_list",
    "p": "pixel_site",
}
_LETTERS: dict[Kind, str] = {kind: code for code, kind in _CODES.items()}
_FLUSH = "*"


def encode(targets: tuple[Target, ...]) -> str:
    """The compact wire form of targets: ``k12,w3,u7``; ``*`` for a full flush."""
    return ",".join(f"{_LETTERS[kind]}{id_}" for kind, id_ in targets) if targets else _FLUSH


def decode(payload: str) -> list[Target] | None:
    """Targets from :func:`encode`; None for a full flush (also for anything unreadable)."""
    if payload == _FLUSH or not payload:
        return None
    targets: list[Target] = []
    for item in payload.split(","):
        kind = _CODES.get(item[:1])
        if kind is None or not (item[1:].isascii() and item[1:].isdigit()):
            return None
        targets.append((kind, int(item[1:])))
    return targets


class Invalidator:
    def __init__(self, shared: _native.SharedState, redis: Any = None, prefix: str = "") -> None:
        self.shared = shared
        self.redis = redis
        self.channel = f"{prefix}invalidate"
        self.node = f"{uuid.uuid4().hex}:{os.getpid()}"
        self._listeners: dict[str, list[Callable[[int], object]]] = {k: [] for k in KINDS}
        self._flush_listeners: list[Callable[[], object]] = []
        self._applied: int | None = None  # log head applied by this process (None: not yet)
        self.epoch = 0  # full flushes applied by this process
        self.targets_applied = 0

    def subscribe(self, kind: Kind, callback: Callable[[int], object]) -> None:
        """Call ``callback(id)`` for every target of ``kind`` (from any process or node),
        inside the per-request sync: it must be cheap and synchronous."""
        self._listeners[kind].append(callback)

    def subscribe_flush(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` on every full flush (same rules as :meth:`subscribe`)."""
        self._flush_listeners.append(callback)

    def sync(self) -> None:
        """Apply what the host's log gained since the last call (once per request)."""
        head = self.shared.log_head()
        if head != self._applied:
            self._catch_up(head)

    def _catch_up(self, head: int) -> None:
        applied, self._applied = self._applied, head
        if applied is None:
            return  # first sync of this process: its caches are still empty
        targets = self.shared.log_read(applied, head)
        if targets is None:
            self._flush()
            return
        self.targets_applied += len(targets)
        for kind, id_ in targets:
            for callback in self._listeners[kind]:
                callback(id_)

    def _flush(self) -> None:
        self.epoch += 1
        for callback in self._flush_listeners:
            callback()

    def mark(self) -> int:
        """Call before a read whose result may be cached; pass the mark to :meth:`untouched`."""
        head = self.shared.log_head()
        if self._applied is None:
            self._applied = head  # caches fill from here on: apply everything after it
        return head

    def untouched(self, mark: int, *targets: Target) -> bool:
        """Whether nothing logged since ``mark`` touches ``targets``: a value read after
        ``mark`` that depends only on them may be cached. Call without an ``await``
        between it and the insert (a later change is evicted by the next sync)."""
        return not self.shared.log_touches(mark, list(targets))

    async def changed(self, *targets: Target) -> None:
        """Call after a committed change, naming what cached data it made stale; with no
        targets, everything (a full flush)."""
        if targets:
            self.shared.log_append(list(targets))
        else:
            self.shared.log_flush()
        self.sync()  # this process's own caches at once
        if self.redis is not None:
            await self._publish(f"{self.node}|{encode(targets)}")

    async def _publish(self, message: str) -> None:
        from redis.exceptions import ConnectionError as Disconnected

        for attempt in (1, 2):
            try:
                await self.redis.publish(self.channel, message)
                return
            except Disconnected as exc:  # a pooled connection a restarted server dropped:
                if attempt == 2:  # retry once on a fresh one (never after a timeout)
                    log.warning("could not publish cache invalidation: %s", exc)
            except Exception as exc:  # Redis down: this host is still exact; log, never fail
                log.warning("could not publish cache invalidation: %s", exc)
                return

    def received(self, message: str) -> None:
        """Apply a message from the channel to this host's log (not our own)."""
        sender, _, payload = message.partition("|")
        if sender == self.node:
            return
        targets = decode(payload)
        if targets is None:
            self.shared.log_flush()
        else:
            self.shared.log_append(list(targets))

    async def listen(self) -> None:
        """Append other nodes' changes to this host's log. Runs forever."""
        if self.redis is None:
            return
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                # Anything may have changed while we were not listening.
                self.shared.log_flush()
                async for message in pubsub.listen():
                    data = message.get("data")
                    self.received(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("invalidation listener lost Redis (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)

    def stats(self) -> dict[str, int]:
        return {"targets_applied": self.targets_applied, "full_flushes": self.epoch}
