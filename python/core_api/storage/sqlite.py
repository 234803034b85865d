"""SQLite backend: the embedded default (stdlib sqlite3, WAL).

One connection per process, driven from one dedicated thread so the event loop never
blocks on the file lock another worker process holds; an asyncio lock keeps statements of
one transaction together.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from .base import Executor, IntegrityError, Params, Row

T = TypeVar("T")


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
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
