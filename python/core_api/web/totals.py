"""Cached list totals, so that a page does not cost a COUNT over the whole collection.

A list's unfiltered total is cached per process, keyed by (list, scope id): the workspaces
of a user, the keys of a workspace, and later the deliveries of a webhook or the events of
a pixel site. Writes that change a total announce their scope through the invalidator
(``changed(("user", id))`` and so on); the announcement reaches every process on the host
through shared memory and other nodes through Redis, and is delivered to this cache during
each request's sync, before the request reads anything. A full flush empties the cache.

Filtered totals (search, status, date ranges) are never cached: an update can move a row
in or out of a filter without changing the scope's size, and ``status`` depends on the
clock. They are counted per request, over the scope's rows only.

A count that a write to its scope (or a flush) overtook is returned but not stored: the
same ``mark()`` / ``untouched()`` guard the other caches use, read from the host's log, so
a write committed by another process while the count ran is caught too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .listing import ListQuery

MAX_ENTRIES = 100_000  # scopes remembered per process; past it the cache starts over


class Subscribable(Protocol):
    """The part of the Invalidator this cache uses (``kind`` is its Literal of kinds)."""

    def subscribe(self, kind: Any, callback: Callable[[int], object]) -> None: ...
    def subscribe_flush(self, callback: Callable[[], object]) -> None: ...
    def mark(self) -> int: ...
    def untouched(self, mark: int, *targets: Any) -> bool: ...


class Totals:
    """Totals of the lists scoped by one kind of invalidation target (``"user"``,
    ``"workspace"``, ...). Each list names itself, so several lists may share a scope."""

    def __init__(
        self, invalidator: Subscribable, scopes: tuple[str, ...], max_entries: int = MAX_ENTRIES
    ):
        self.invalidator, self.scopes, self.max_entries = invalidator, scopes, max_entries
        self._totals: dict[int, dict[str, int]] = {}  # scope id -> list name -> total
        for scope in scopes:  # every kind of target whose id is this list's scope id
            invalidator.subscribe(scope, self.invalidate)
        invalidator.subscribe_flush(self.clear)

    async def of(
        self,
        name: str,
        scope_id: int,
        query: ListQuery,
        rows: int,
        count: Callable[[], Awaitable[int]],
    ) -> int:
        """The total for a page of ``rows`` rows already read: from the page itself when it
        shows it, else counted for a filtered query, else from the cache."""
        known = query.total_from_page(rows)
        if known is not None:
            return known
        if query.filtered:
            return await count()
        return await self.total(name, scope_id, count)

    async def total(self, name: str, scope_id: int, count: Callable[[], Awaitable[int]]) -> int:
        """The total of list ``name`` in scope ``scope_id``; ``count`` runs on a miss."""
        cached = self._totals.get(scope_id)
        if cached is not None and name in cached:
            return cached[name]
        mark = self.invalidator.mark()
        value = await count()
        if self.invalidator.untouched(mark, *((kind, scope_id) for kind in self.scopes)):
            if len(self._totals) >= self.max_entries:
                self.clear()
            else:
                self._totals.setdefault(scope_id, {})[name] = value
        return value

    def invalidate(self, scope_id: int) -> None:
        """A write changed (or may have changed) the scope's lists. Cheap: runs in sync."""
        self._totals.pop(scope_id, None)

    def clear(self) -> None:
        self._totals.clear()

    def __len__(self) -> int:
        return len(self._totals)
