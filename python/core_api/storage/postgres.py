"""PostgreSQL backend: psycopg 3 with an async connection pool."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from .base import DatabaseUnavailable, Executor, IntegrityError, Params, Row

MIGRATION_LOCK_ID = 0x636F7265_617069  # "coreapi": one advisory lock for `core-api migrate`


@functools.lru_cache(maxsize=1024)
def adapt(sql: str) -> str:
    """Repositories write ``?`` placeholders; psycopg wants ``%s`` (and literal ``%%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Statements:
    conn: Any

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        try:
            cur = await self.conn.execute(adapt(sql), tuple(params))
            row: Row | None = await cur.fetchone()
            return row
        except psycopg.errors.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        cur = await self.conn.execute(adapt(sql), tuple(params))
        rows: list[Row] = await cur.fetchall()
        return rows

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            cur = await self.conn.execute(adapt(sql), tuple(params))
            return int(cur.rowcount)
        except psycopg.errors.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc


class _Connection(_Statements):
    def __init__(self, conn: Any) -> None:
        self.conn = conn


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self._url = url
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
        )

    async def open(self) -> None:
        # One direct connection first: its error says why ("database ... does not exist",
        # "connection refused"), where the pool would only time out.
        try:
            probe = await psycopg.AsyncConnection.connect(self._url, connect_timeout=10)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {reason}") from None
        await probe.close()
        await self._pool.open(wait=True, timeout=10)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        async with self._pool.connection() as conn:
            return await _Connection(conn).fetch_one(sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._pool.connection() as conn:
            return await _Connection(conn).fetch_all(sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._pool.connection() as conn:
            return await _Connection(conn).execute(sql, params)

    async def executescript(self, script: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(script)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._pool.connection() as conn, conn.transaction():
            yield _Connection(conn)

    @asynccontextmanager
    async def migration_lock(self) -> AsyncIterator[Executor]:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
            yield _Connection(conn)

    async def close(self) -> None:
        await self._pool.close()
