"""SQLite backend: the embedded default (stdlib sqlite3, WAL).

Two connections per process, each driven from its own thread so the event loop never
blocks on SQLite:

- the **writer** runs transactions and writes; an asyncio lock keeps the statements of
  one transaction together;
- the **reader** (``query_only``) runs every ``SELECT`` made outside a transaction. In WAL
  mode a reader sees the last commit and never waits for a writer, so reads do not queue
  behind a transaction this process holds open, nor behind the file lock another worker
  process holds. With one connection, a ``GET`` waited for every ``POST`` in flight: under
  the mixed load (15 % writes) that was most of the SQLite p99.

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
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .base import DatabaseUnavailable, Executor, IntegrityError, Params, Row

T = TypeVar("T")
log = logging.getLogger("core_api.storage")
BUSY_TIMEOUT_S = 10.0  # how long a write waits for another process's write lock

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


class _Connection:
    """One sqlite3 connection, its thread, and the lock that keeps a caller's statements
    together."""

    def __init__(self, path: Path, name: str, *, read_only: bool) -> None:
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.lock = asyncio.Lock()
        try:
            with _translated():
                self.conn = self.thread.submit(_connect, path, read_only).result()
        except BaseException:
            self.thread.shutdown(wait=True)
            raise

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with _translated():
            return await asyncio.get_running_loop().run_in_executor(self.thread, fn, self.conn)

    async def close(self) -> None:
        async with self.lock:
            await self.run(sqlite3.Connection.close)
        self.thread.shutdown(wait=True)


# Page cache per connection, in KiB (SQLite's default is 2 MiB): the indexes that random
# keys land in (idempotency keys, slugs) outgrow 2 MiB within minutes of writes.
CACHE_KIB = 65_536


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")  # first: WAL may wait
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute("PRAGMA foreign_keys=ON")
        if read_only:
            conn.execute("PRAGMA query_only=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _fetch_one(sql: str, params: Params) -> Callable[[sqlite3.Connection], Row | None]:
    def fetch(conn: sqlite3.Connection) -> Row | None:
        row = conn.execute(sql, tuple(params)).fetchone()
        return None if row is None else dict(row)

    return fetch


def _fetch_all(sql: str, params: Params) -> Callable[[sqlite3.Connection], list[Row]]:
    def fetch(conn: sqlite3.Connection) -> list[Row]:
        return [dict(r) for r in conn.execute(sql, tuple(params)).fetchall()]

    return fetch


def _execute(sql: str, params: Params) -> Callable[[sqlite3.Connection], int]:
    def execute(conn: sqlite3.Connection) -> int:
        return conn.execute(sql, tuple(params)).rowcount

    return execute


def _begin(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for another process's write lock in steps of at most a
    millisecond. SQLite's own busy handler sleeps 1, 2, 5, 10, ... up to 100 ms between
    tries, so a second worker's write could wait tens of milliseconds for a lock held for
    one. (Under the mixed load the write p99 moved only within run-to-run noise, 96 to 86
    ms: the lock's hold time, not the polling, dominates there.)"""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.0001
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.001)
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")


def _end_open_transaction(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _is_read(sql: str) -> bool:
    """A plain SELECT, which the reader may run. Anything else (an ``INSERT ... RETURNING``
    read through ``fetch_one`` too) goes to the writer."""
    return sql.lstrip()[:6].upper() == "SELECT"


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(path)
        self._writer = _Connection(path, "sqlite-writer", read_only=False)
        try:  # opened second: the writer switched the file to WAL
            self._reader = _Connection(path, "sqlite-reader", read_only=True)
        except BaseException:
            self._writer.conn.close()
            self._writer.thread.shutdown(wait=True)
            raise
        self._closed = False

    def _for(self, sql: str) -> _Connection:
        return self._reader if _is_read(sql) else self._writer

    async def open(self) -> None:
        """Connected on construction; nothing to wait for."""

    async def ping(self) -> None:
        await self.fetch_one("SELECT 1")

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        connection = self._for(sql)
        async with connection.lock:
            return await connection.run(_fetch_one(sql, params))

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        connection = self._for(sql)
        async with connection.lock:
            return await connection.run(_fetch_all(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._writer.lock:
            return await self._writer.run(_execute(sql, params))

    async def executescript(self, script: str) -> None:
        async with self._writer.lock:
            await self._writer.run(lambda conn: conn.executescript(script))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        writer = self._writer
        async with writer.lock:
            try:
                # IMMEDIATE takes the write lock up front: no lock-upgrade deadlocks.
                await writer.run(_begin)
                try:
                    yield _SQLiteTransaction(writer)
                except BaseException:
                    await writer.run(_execute("ROLLBACK", ()))
                    raise
                await writer.run(_execute("COMMIT", ()))
            except BaseException:
                # Cancelled while BEGIN, COMMIT or ROLLBACK ran: the statement still runs on
                # the thread. End any transaction it left open before the lock is released,
                # or the next BEGIN fails ("cannot start a transaction within a transaction").
                await asyncio.shield(writer.run(_end_open_transaction))
                raise

    def migration_lock(self) -> Any:
        return self.transaction()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._reader.close()
        await self._writer.close()


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
    """Statements inside a transaction, on the writer; its lock is already held."""

    dialect = "sqlite"

    def __init__(self, writer: _Connection) -> None:
        self._writer = writer

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        return await self._writer.run(_fetch_one(sql, params))

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._writer.run(_fetch_all(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._writer.run(_execute(sql, params))
