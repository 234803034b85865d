"""Batch writers: each process writes its own pixel batches on a connection of its own.

A dedicated connection keeps bulk writes off the request path's pool (PostgreSQL) and
lock (SQLite): a COPY of thousands of rows never makes an API request wait for a
connection. PostgreSQL gets one binary ``COPY`` per batch, encoded by the extension;
SQLite one ``executemany`` in one transaction, on the writer's own thread.

Unavailability (connection refused or lost, timeouts, a locked SQLite file) raises
:class:`DatabaseUnavailable` and the connection is dropped, to be made again on the next
write; the caller keeps the batch and retries it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from .. import _native
from ..config import Settings, sqlite_path
from ..storage import DatabaseUnavailable, Timeouts, postgres
from . import ingest_repo

BotCounts = Sequence[tuple[int, int, int]]  # (site_id, day, count)


class DataRefused(Exception):
    """The database refused a batch's content (never expected: events are validated)."""


class EventWriter(Protocol):
    async def write(self, batch: _native.PixelBatch) -> None: ...
    async def add_bot_counts(self, counts: BotCounts) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class PostgresWriter:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.database_url
        self.timeouts = Timeouts(settings.pg_connect_timeout, settings.pg_statement_timeout)
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            try:
                # Two statements only (the COPY is not prepared): no statement cache.
                self._conn = await postgres.connect(self.url, self.timeouts, 2)
            except DatabaseUnavailable as exc:
                raise DatabaseUnavailable(f"pixel writer: {exc}") from None
        return self._conn

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[object]]) -> None:
        conn = await self._connection()
        try:
            await work(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            if postgres.unavailable(exc, conn):
                await self._drop()
                raise DatabaseUnavailable(f"pixel writer: {postgres.one_line(exc)}") from None
            raise DataRefused(postgres.one_line(exc)) from exc
        except BaseException:
            # Cancelled mid-COPY: the protocol state is unknown, make a new connection.
            await self._drop()
            raise

    async def write(self, batch: _native.PixelBatch) -> None:
        payload = batch.copy_binary()

        async def source() -> AsyncIterator[bytes]:  # bytes alone would be a file name
            yield payload

        async def copy(conn: asyncpg.Connection) -> None:
            await conn.copy_to_table(
                ingest_repo.TABLE_EVENTS,
                source=source(),
                columns=list(ingest_repo.COLUMNS),
                format="binary",
            )

        await self._run(copy)

    async def add_bot_counts(self, counts: BotCounts) -> None:
        async def upsert(conn: asyncpg.Connection) -> None:
            await conn.executemany(postgres.adapt(ingest_repo.ADD_BOTS), counts)

        await self._run(upsert)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1"))

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=1.0)
            except Exception:  # asyncpg aborted it already
                conn.terminate()


_SQLITE_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


class SQLiteWriter:
    """One connection on one thread of its own; WAL lets it write beside the request
    path's connection (SQLite serialises the two writers with its file lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixel-writer")
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def _in_transaction(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def _run(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._in_transaction, sql, rows)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _SQLITE_UNAVAILABLE:
                raise DatabaseUnavailable(f"pixel writer: SQLite: {exc}") from None
            raise DataRefused(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise DataRefused(str(exc)) from exc

    async def write(self, batch: _native.PixelBatch) -> None:
        await self._run(ingest_repo.INSERT_EVENT, batch.rows())

    async def add_bot_counts(self, counts: BotCounts) -> None:
        await self._run(ingest_repo.ADD_BOTS, counts)

    async def ping(self) -> None:
        await self._run(ingest_repo.ADD_BOTS, [])  # takes and gives back the write lock

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)


def create_writer(settings: Settings) -> EventWriter:
    if settings.is_sqlite:
        return SQLiteWriter(sqlite_path(settings.database_url))
    return PostgresWriter(settings)
