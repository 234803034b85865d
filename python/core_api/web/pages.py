"""Cached list pages, so that reading the same page again costs no query.

Lists are read far more often than they change: a dashboard polls the first page of a
user's workspaces, a client pages through its keys. This per-process cache keeps the rows
of unfiltered pages, keyed by (scope id, page, per_page, sort), and drops them on the same
targeted invalidation every other cache uses:

* a change to the scope (``("workspace_list", user)``, ``("key_list", workspace)``, and the
  scope's own kind) drops every cached page of that scope: rows came or went;
* a change to one item (``("workspace", id)``, ``("key", id)``) drops the pages that show
  it: a row's content changed;
* a full flush (lost Redis connection, log overrun) drops everything.

The announcement reaches every process on the host through shared memory before its next
request reads anything, and other nodes through Redis, so a page is exactly as fresh as
the access caches. A page filled while a write to its scope or to one of its rows was
committed (by any process) is returned but not kept: the ``mark()``/``untouched()`` guard.

Filtered pages (search, status, date ranges) are never cached: an update can move a row in
or out of a filter, and ``status`` depends on the clock. Rows whose content depends on the
clock (a key's status, its last-used time) set a deadline after which the page is re-read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .listing import ListQuery

R = TypeVar("R")
MAX_PAGES = 20_000  # pages remembered per process; past it the cache starts over

PageKey = tuple[int, Hashable]


class Subscribable(Protocol):
    def subscribe(self, kind: Any, callback: Callable[[int], object]) -> None: ...
    def subscribe_flush(self, callback: Callable[[], object]) -> None: ...
    def mark(self) -> int: ...
    def untouched(self, mark: int, *targets: Any) -> bool: ...


@dataclass(slots=True)
class _Page(Generic[R]):
    rows: list[R]
    item_ids: tuple[int, ...]
    deadline: int | None  # epoch ms after which the rows are re-read; None: until changed


def page_key(query: ListQuery) -> Hashable:
    return (query.page, query.per_page, tuple(query.sort))


class PageCache(Generic[R]):
    """Pages of one list. ``scopes`` are the kinds of target whose id is the list's scope
    id; ``item_kind`` is the kind whose id is a row's id."""

    def __init__(
        self,
        invalidator: Subscribable,
        scopes: tuple[str, ...],
        item_kind: str,
        item_id: Callable[[R], int],
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.invalidator, self.scopes, self.item_kind = invalidator, scopes, item_kind
        self.item_id, self.max_pages = item_id, max_pages
        self._pages: dict[PageKey, _Page[R]] = {}
        self._by_scope: dict[int, set[PageKey]] = {}
        self._by_item: dict[int, set[PageKey]] = {}
        self.hits = self.misses = 0
        for scope in scopes:
            invalidator.subscribe(scope, self._drop_scope)
        invalidator.subscribe(item_kind, self._drop_item)
        invalidator.subscribe_flush(self.clear)

    async def load(
        self,
        scope_id: int,
        query: ListQuery,
        now: int,
        fetch: Callable[[], Awaitable[list[R]]],
        deadline: Callable[[list[R]], int | None] = lambda rows: None,
    ) -> list[R]:
        """The page's rows: from the cache, or from ``fetch`` (kept when nothing touched
        the scope or the rows while it ran). ``deadline`` tells when fetched rows go stale
        by the clock alone."""
        if query.filtered:
            return await fetch()
        key = (scope_id, page_key(query))
        cached = self._pages.get(key)
        if cached is not None and (cached.deadline is None or now < cached.deadline):
            self.hits += 1
            return cached.rows
        self.misses += 1
        mark = self.invalidator.mark()
        rows = await fetch()
        ids = tuple(self.item_id(row) for row in rows)
        targets = [(kind, scope_id) for kind in self.scopes]
        targets += [(self.item_kind, id_) for id_ in ids]
        if self.invalidator.untouched(mark, *targets):
            self._keep(key, _Page(rows, ids, deadline(rows)))
        return rows

    def _keep(self, key: PageKey, page: _Page[R]) -> None:
        if key in self._pages:
            self._drop(key)
        elif len(self._pages) >= self.max_pages:
            self.clear()
        self._pages[key] = page
        self._by_scope.setdefault(key[0], set()).add(key)
        for id_ in page.item_ids:
            self._by_item.setdefault(id_, set()).add(key)

    def _drop(self, key: PageKey) -> None:
        page = self._pages.pop(key, None)
        if page is None:
            return
        self._by_scope.get(key[0], set()).discard(key)
        for id_ in page.item_ids:
            keys = self._by_item.get(id_)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_item[id_]

    def _drop_scope(self, scope_id: int) -> None:
        for key in self._by_scope.pop(scope_id, set()):
            self._drop(key)

    def _drop_item(self, item_id: int) -> None:
        for key in tuple(self._by_item.get(item_id, ())):
            self._drop(key)

    def clear(self) -> None:
        self._pages.clear()
        self._by_scope.clear()
        self._by_item.clear()

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._pages)}

    def __len__(self) -> int:
        return len(self._pages)
