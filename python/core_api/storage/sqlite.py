"""SQLite backend: the embedded default (stdlib sqlite3, WAL).

One connection per process, driven from one dedicated thread so the event loop never
blocks on the file lock another worker process holds; an asyncio lock keeps statements of
one transaction together.

Every sqlite3 error that means something becomes a storage error here, once: constraint
violations become :class:`IntegrityError`; a lock held past ``busy_timeout``, an I/O error,
a full disk or a file that cannot be opened become :class:`DatabaseUnavailable` (503 at
the API). Anything else (bad SQL, a closed connection) is a bug and stays as it is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .base import DatabaseUnavailable, Executor, IntegrityError, Params, Row

T = TypeVar("T")
log = logging.getLogger("core_api.storage")

# Primary result codes that mean "not now" rather than "wrong request" or "bug".
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,  # another process held the write lock past busy_timeout
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


@contextmanager
def _translated() -> Iterator[None]:
    """The one place sqlite3 errors become storage errors."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(str(exc)) from exc
    except sqlite3.OperationalError as exc:
        code = getattr(exc, "sqlite_errorcode", 0)  # absent where Python itself raised
        if code & 0xFF in _UNAVAILABLE:  # an extended code carries the primary one low
            raise DatabaseUnavailable(f"SQLite: {exc}") from exc
        raise


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._lock = asyncio.Lock()
        try:
            with _translated():
                self._conn = self._thread.submit(self._connect, path).result()
        except BaseException:
            self._thread.shutdown(wait=True)
            raise
        self._closed = False

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=10000")  # first: the WAL switch may wait too
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _run(self, fn: Callable[[], T]) -> T:
        with _translated():
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _fetch_one(self, sql: str, params: Params) -> Row | None:
        row = self._conn.execute(sql, tuple(params)).fetchone()
        return None if row is None else dict(row)

    def _fetch_all(self, sql: str, params: Params) -> list[Row]:
        return [dict(r) for r in self._conn.execute(sql, tuple(params)).fetchall()]

    def _execute(self, sql: str, params: Params) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    async def open(self) -> None:
        """Connected on construction; nothing to wait for."""

    async def ping(self) -> None:
        await self.fetch_one("SELECT 1")

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        async with self._lock:
            return await self._run(lambda: self._fetch_one(sql, params))

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock:
            return await self._run(lambda: self._fetch_all(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._lock:
            return await self._run(lambda: self._execute(sql, params))

    async def executescript(self, script: str) -> None:
        async with self._lock:
            await self._run(lambda: self._conn.executescript(script))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._lock:
            try:
                # IMMEDIATE takes the write lock up front: no lock-upgrade deadlocks.
                await self._run(lambda: self._conn.execute("BEGIN IMMEDIATE"))
                try:
                    yield _SQLiteTransaction(self)
                except BaseException:
                    await self._run(lambda: self._conn.execute("ROLLBACK"))
                    raise
                await self._run(lambda: self._conn.execute("COMMIT"))
            except BaseException:
                # Cancelled while BEGIN, COMMIT or ROLLBACK ran: the statement still runs on
                # the thread. End any transaction it left open before the lock is released,
                # or the next BEGIN fails ("cannot start a transaction within a transaction").
                await asyncio.shield(self._run(self._end_open_transaction))
                raise

    def _end_open_transaction(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def migration_lock(self) -> Any:
        return self.transaction()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            await self._run(self._conn.close)
        self._thread.shutdown(wait=True)


def _owner_only(path: Path) -> None:
    """The file holds key hashes and every tenant's data: 0600, like ``secret_key``.
    SQLite gives the -wal and -shm files it creates the database file's mode; files left
    by an older version are tightened too."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            pass
        except PermissionError:
            log.warning("cannot make %s readable by its owner only", file)


class _SQLiteTransaction:
    """Statements inside a transaction; the database lock is already held."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        return await self._db._run(lambda: self._db._fetch_one(sql, params))

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._db._run(lambda: self._db._fetch_all(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._db._run(lambda: self._db._execute(sql, params))
