"""PostgreSQL backend: psycopg 3 over a small connection pool of its own.

The pool makes connections on demand, in the request that needs one, with no background
reconnection. psycopg_pool reconnects in the background with an exponential back-off, so
while the database was down every request waited the whole checkout timeout, and after it
came back the first requests still waited for the next scheduled attempt. Here, while the
database is unreachable, each request fails within the connect timeout (at once when the
connection is refused) with :class:`DatabaseUnavailable`, and the first request after it
is back connects again.

Every psycopg error becomes a storage error here, once: constraint violations become
:class:`IntegrityError`, lost or refused connections, server shutdowns and statement
timeouts become :class:`DatabaseUnavailable` (503 at the API).
"""

from __future__ import annotations

import asyncio
import functools
import math
import select
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from .base import DatabaseUnavailable, Executor, IntegrityError, Params, Row

MIGRATION_LOCK_ID = 0x636F7265_617069  # "coreapi": one advisory lock for `core-api migrate`
MAX_LIFETIME_SECONDS = 3600.0  # connections are replaced hourly (server memory, failovers)

Conn = psycopg.AsyncConnection[Row]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``statement`` is the server's ``statement_timeout`` (0 switches it off);
    ``checkout`` bounds the wait for a free connection when all ``pool_size`` are busy."""

    connect: float = 3.0
    statement: float = 5.0
    checkout: float = 5.0


class _ConnectionLost(DatabaseUnavailable):
    """The connection broke under the statement (rather than the server refusing it)."""


@functools.lru_cache(maxsize=1024)
def adapt(sql: str) -> str:
    """Repositories write ``?`` placeholders; psycopg wants ``%s`` (and literal ``%%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextmanager
def _translated(conn: Conn) -> Iterator[None]:
    """The one place psycopg errors become storage errors."""
    try:
        yield
    except psycopg.errors.IntegrityError as exc:
        raise IntegrityError(str(exc)) from exc
    except psycopg.OperationalError as exc:
        # Connection lost or refused, server shutting down, statement_timeout, too many
        # connections: all mean "not now", not "wrong request".
        lost = _ConnectionLost if conn.broken else DatabaseUnavailable
        raise lost(f"PostgreSQL: {_one_line(exc)}") from exc


def _read_only(sql: str) -> bool:
    return sql.lstrip()[:6].upper() == "SELECT"


def _alive(conn: Conn) -> bool:
    """An idle connection has nothing to say: a readable socket means the server closed it
    (restart, failover, a proxy that dropped it) or sent a fatal error. One poll(), no
    round trip, so checking every checkout costs nothing noticeable."""
    if conn.closed:
        return False
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)  # POLLHUP and POLLERR are always reported
    return not poller.poll(0)


@dataclass(slots=True)
class _Pooled:
    conn: Conn
    born: float


class _Pool:
    def __init__(self, url: str, size: int, timeouts: Timeouts) -> None:
        self._url, self._timeouts = url, timeouts
        self._idle: list[_Pooled] = []
        self._free = asyncio.Semaphore(size)
        self._closed = False

    async def _connect(self) -> Conn:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(2, math.ceil(self._timeouts.connect)),  # libpq's minimum
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {_one_line(exc)}") from None
        try:
            with _translated(conn):
                # set_config rather than a startup option: poolers such as PgBouncer refuse those.
                await conn.execute(
                    "SELECT set_config('statement_timeout', %s, false)",
                    (f"{int(self._timeouts.statement * 1000)}ms",),
                )
        except BaseException:
            await conn.close()
            raise
        return conn

    async def acquire(self) -> _Pooled:
        if self._closed:  # used after close(): a bug, not an outage
            raise RuntimeError("the PostgreSQL connection pool is closed")
        if self._free.locked():
            try:
                async with asyncio.timeout(self._timeouts.checkout):
                    await self._free.acquire()
            except TimeoutError:
                raise DatabaseUnavailable(
                    f"PostgreSQL: no connection free within {self._timeouts.checkout:g} s"
                ) from None
        else:
            await self._free.acquire()  # returns at once
        try:
            while self._idle:
                pooled = self._idle.pop()  # the most recently used: warmest, least likely dead
                if _alive(pooled.conn):
                    return pooled
                await pooled.conn.close()
            return _Pooled(await self._connect(), time.monotonic())
        except BaseException:
            self._free.release()
            raise

    async def release(self, pooled: _Pooled) -> None:
        try:
            conn = pooled.conn
            if (
                self._closed
                or conn.closed
                # ACTIVE (a cancelled statement) or a transaction left open: not reusable.
                or conn.info.transaction_status != TransactionStatus.IDLE
                or time.monotonic() - pooled.born > MAX_LIFETIME_SECONDS
            ):
                await conn.close()
            else:
                self._idle.append(pooled)
        finally:
            self._free.release()

    async def discard_idle(self) -> None:
        idle, self._idle = self._idle, []
        for pooled in idle:
            await pooled.conn.close()

    async def close(self) -> None:
        self._closed = True
        await self.discard_idle()


class _Connection:
    """Statements on one checked-out connection."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def _execute(self, sql: str, params: Params) -> psycopg.AsyncCursor[Row]:
        with _translated(self.conn):
            return await self.conn.execute(adapt(sql), tuple(params))

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        cur = await self._execute(sql, params)
        return await cur.fetchone()

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        cur = await self._execute(sql, params)
        return await cur.fetchall()

    async def execute(self, sql: str, params: Params = ()) -> int:
        cur = await self._execute(sql, params)
        return int(cur.rowcount)


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = 10, timeouts: Timeouts | None = None) -> None:
        self._pool = _Pool(url, pool_size, timeouts or Timeouts())

    async def open(self) -> None:
        # One connection now, so a wrong URL fails at start with its reason ("database ...
        # does not exist", "connection refused"); it stays as the first pooled connection.
        await self._pool.release(await self._pool.acquire())

    async def ping(self) -> None:
        await self.fetch_one("SELECT 1")  # a read: retried once on a new connection if lost

    async def _attempt(self, work: Callable[[_Connection], Awaitable[T]]) -> T:
        pooled = await self._pool.acquire()
        try:
            return await work(_Connection(pooled.conn))
        finally:
            await self._pool.release(pooled)

    async def _run(self, sql: str, work: Callable[[_Connection], Awaitable[T]]) -> T:
        try:
            return await self._attempt(work)
        except _ConnectionLost:
            # The connection was dropped without the checkout poll seeing it. That usually
            # means a restart or failover, so the idle connections are suspect too. A read is
            # safe to run again, once, on a new connection; a write is not (it may have been
            # applied), so it stays a 503 that the client retries.
            await self._pool.discard_idle()
            if not _read_only(sql):
                raise
            return await self._attempt(work)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        return await self._run(sql, lambda c: c.fetch_one(sql, params))

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._run(sql, lambda c: c.fetch_all(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._run(sql, lambda c: c.execute(sql, params))

    async def executescript(self, script: str) -> None:
        async def run(c: _Connection) -> None:
            with _translated(c.conn):
                await c.conn.execute(script)

        await self._attempt(run)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        pooled = await self._pool.acquire()
        try:
            with _translated(pooled.conn):  # BEGIN, COMMIT and ROLLBACK themselves
                async with pooled.conn.transaction():
                    yield _Connection(pooled.conn)
        except _ConnectionLost:
            await self._pool.discard_idle()  # as in _run; a transaction is never re-run
            raise
        finally:
            await self._pool.release(pooled)

    @asynccontextmanager
    async def migration_lock(self) -> AsyncIterator[Executor]:
        async with self.transaction() as tx:
            # Waiting for another node's migration, or building an index, may take longer
            # than a request's statement timeout.
            await tx.execute("SELECT set_config('statement_timeout', '0', true)")
            await tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_ID,))
            yield tx

    async def close(self) -> None:
        await self._pool.close()
