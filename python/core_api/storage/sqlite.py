"""SQLite backend: the embedded default (stdlib sqlite3, WAL).

One connection per process, driven from one dedicated thread so the event loop never
blocks on the file lock another worker process holds; an asyncio lock keeps statements of
one transaction together.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from .base import DatabaseUnavailable, Executor, IntegrityError, Params, Row

T = TypeVar("T")
log = logging.getLogger("core_api.storage")


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._lock = asyncio.Lock()
        self._conn = self._thread.submit(self._connect, path).result()
        self._closed = False

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            # Another process held the write lock past busy_timeout: "not now" (503), not a bug.
            if "locked" in str(exc) or "busy" in str(exc):
                raise DatabaseUnavailable(f"SQLite: {exc}") from exc
            raise

    def _fetch_one(self, sql: str, params: Params) -> Row | None:
        row = self._conn.execute(sql, tuple(params)).fetchone()
        return None if row is None else dict(row)

    def _fetch_all(self, sql: str, params: Params) -> list[Row]:
        return [dict(r) for r in self._conn.execute(sql, tuple(params)).fetchall()]

    def _execute(self, sql: str, params: Params) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    async def open(self) -> None:
        """Connected on construction; nothing to wait for."""

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
            # IMMEDIATE takes the write lock up front: no lock-upgrade deadlocks between workers.
            await self._run(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            try:
                yield _SQLiteTransaction(self)
            except BaseException:
                await self._run(lambda: self._conn.execute("ROLLBACK"))
                raise
            await self._run(lambda: self._conn.execute("COMMIT"))

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
