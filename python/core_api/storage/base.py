"""The connector abstraction every repository talks to.

Repositories write SQL once, with ``?`` placeholders; each backend adapts the placeholder
style. Rows come back as plain dicts, which each repository turns into typed records
(frozen dataclasses): no dict crosses into services. Timestamps are integer epoch
milliseconds in both dialects, JSON is stored as text, so repositories need no
per-dialect branches beyond the few that :attr:`Database.dialect` answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Row = dict[str, Any]
Params = Sequence[Any]


class Executor(Protocol):
    dialect: str  # "postgresql" | "sqlite": the database, its transactions and connections

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None: ...
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]: ...
    async def execute(self, sql: str, params: Params = ()) -> int: ...


class Database(Executor, Protocol):
    async def open(self) -> None: ...
    async def ping(self) -> None: ...  # answers, or raises DatabaseUnavailable
    def transaction(self) -> AbstractAsyncContextManager[Executor]: ...
    async def executescript(self, script: str) -> None: ...
    def migration_lock(self) -> AbstractAsyncContextManager[Executor]: ...
    async def close(self) -> None: ...


class IntegrityError(Exception):
    """A unique or foreign-key constraint refused the write (both dialects map onto this)."""


class DatabaseUnavailable(Exception):
    """The database cannot serve the request now: unreachable, connection lost, shutting
    down, or over its timeouts. At start-up the CLI prints the message (one line, saying
    why); during a request the API answers 503 ``service_unavailable`` with Retry-After."""


async def fetch_value(db: Executor, sql: str, params: Params = ()) -> Any:
    row = await db.fetch_one(sql, params)
    return None if row is None else next(iter(row.values()))
