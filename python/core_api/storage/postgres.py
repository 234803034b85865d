"""PostgreSQL backend: asyncpg over a small connection pool of its own.

asyncpg rather than psycopg 3: a by-id SELECT costs it about half the CPU, and the API's
write paths run eight to ten statements each on a CPU-bound worker. Each connection keeps
asyncpg's statement cache, so a statement is parsed and planned once per connection and
later runs cost one round trip.

The pool makes connections on demand, in the request that needs one, with no background
reconnection: while the database is unreachable, each request fails within the connect
timeout (at once when the connection is refused) with :class:`DatabaseUnavailable`, and
the first request after it is back connects again.

Every driver error that means something becomes a storage error here, once: constraint
violations become :class:`IntegrityError`; lost or refused connections, server shutdowns,
statement and lock timeouts, serialization failures and deadlocks become
:class:`DatabaseUnavailable` (503 at the API). Anything else (bad SQL, a parameter of the
wrong type) is a bug and stays as it is.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg

from .base import DatabaseUnavailable, Executor, IntegrityError, Params, Row

MIGRATION_LOCK_ID = 0x636F7265_617069  # "coreapi": one advisory lock for `core-api migrate`
MAX_LIFETIME_SECONDS = 3600.0  # connections are replaced hourly (server memory, failovers)
# Prepared statements kept per connection (asyncpg's LRU). The API has a few hundred
# distinct statements; a request path uses about ten.
STATEMENT_CACHE_SIZE = 512

Conn = asyncpg.Connection
T = TypeVar("T")

# SQLSTATE classes that mean "not now" rather than "wrong request": connection exceptions,
# transaction rollback (serialization failure, deadlock), insufficient resources (too many
# connections, disk full), object not in prerequisite state (lock_timeout), operator
# intervention (statement_timeout, shutdown), system errors, configuration file errors.
_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58", "F0"})
# The server ends the session after these: the connection is gone.
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})


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
    """Repositories write ``?`` placeholders; PostgreSQL numbers them (``$1``, ``$2``)."""
    parts = sql.split("?")
    if len(parts) == 1:
        return sql
    out = [parts[0]]
    for number, part in enumerate(parts[1:], start=1):
        out.append(f"${number}")
        out.append(part)
    return "".join(out)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def unavailable(exc: BaseException, conn: Conn) -> bool:
    """True when ``exc``, raised by asyncpg or its transport on ``conn``, means "not now"
    (rather than a refused statement or a bug)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return isinstance(exc, asyncpg.PostgresConnectionError) or (
            state[:2] in _UNAVAILABLE_CLASSES
        )
    if isinstance(exc, asyncpg.InterfaceError):
        # On a closed connection: it was lost. Otherwise misuse (another operation in
        # progress) or a parameter of the wrong type: a bug, not an outage.
        return conn.is_closed()
    return isinstance(exc, OSError | TimeoutError)  # the socket failed under asyncpg


def _lost(conn: Conn, exc: BaseException) -> bool:
    return (
        conn.is_closed()
        or isinstance(exc, asyncpg.ConnectionDoesNotExistError | OSError)
        or getattr(exc, "sqlstate", None) in _SESSION_ENDED
    )


def _translate(conn: Conn, exc: BaseException) -> None:
    """The one place asyncpg errors become storage errors: raises the storage error that
    ``exc`` means, or returns when it is none of them (a bug: the caller re-raises it)."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        raise IntegrityError(str(exc)) from exc
    if not unavailable(exc, conn):
        return
    # Connection lost or refused, server shutting down, statement_timeout, too many
    # connections: all mean "not now", not "wrong request".
    lost = _ConnectionLost if _lost(conn, exc) else DatabaseUnavailable
    raise lost(f"PostgreSQL: {one_line(exc)}") from exc


@contextmanager
def _translated(conn: Conn) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        _translate(conn, exc)
        raise


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=16)
def default_ssl(url: str) -> Literal["allow"] | None:
    """``allow`` (TLS only when the server demands it) for a server on this host when the
    URL and ``PGSSLMODE`` leave TLS unsaid; None (asyncpg's own default, ``prefer``, as
    libpq's) otherwise. TLS over loopback protects nothing, and asyncpg's TLS runs in
    Python (the event loop's SSL protocol): it more than doubles a statement's CPU."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        hostname = parts.hostname
    except ValueError:  # asyncpg will say what is wrong with it
        return None
    if "sslmode" in query or "ssl" in query or os.environ.get("PGSSLMODE"):
        return None
    hosts = query.get("host") or [hostname or os.environ.get("PGHOST", "")]
    names = [h for value in hosts for h in value.split(",") if h]
    if names and all(_loopback(h) for h in names):
        return "allow"
    return None


async def connect(url: str, timeouts: Timeouts, statement_cache_size: int) -> Conn:
    """A connection with the statement timeout set, or :class:`DatabaseUnavailable`."""
    try:
        conn: Conn = await asyncpg.connect(
            url,
            timeout=timeouts.connect,
            statement_cache_size=statement_cache_size,
            ssl=default_ssl(url),
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {one_line(exc)}") from None
    try:
        with _translated(conn):
            # set_config rather than a startup option: poolers such as PgBouncer refuse those.
            # A simple query (no parameters): nothing prepared, nothing cached.
            await conn.execute(
                "SELECT set_config('statement_timeout', "
                f"'{int(timeouts.statement * 1000)}ms', false)"
            )
    except BaseException:
        conn.terminate()
        raise
    return conn


def _read_only(sql: str) -> bool:
    return sql.lstrip()[:6].upper() == "SELECT"


def _rowcount(status: str) -> int:
    """The row count of a command tag (``UPDATE 3``, ``INSERT 0 1``); -1 when it has none."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


@dataclass(slots=True)
class _Pooled:
    conn: Conn
    born: float
    spoiled: bool = False  # a statement was interrupted: the protocol state is unknown


class _Pool:
    def __init__(self, url: str, size: int, timeouts: Timeouts) -> None:
        self._url, self._timeouts = url, timeouts
        self._idle: list[_Pooled] = []
        self._free = asyncio.Semaphore(size)
        self._closed = False

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
                # The event loop reads every idle connection's socket, so asyncpg marks a
                # connection the server closed (restart, failover, a proxy that dropped it,
                # a fatal error) as closed as soon as the loop sees it: no round trip.
                if not pooled.conn.is_closed():
                    return pooled
                pooled.conn.terminate()
            conn = await connect(self._url, self._timeouts, STATEMENT_CACHE_SIZE)
            return _Pooled(conn, time.monotonic())
        except BaseException:
            self._free.release()
            raise

    async def release(self, pooled: _Pooled) -> None:
        try:
            conn = pooled.conn
            if (
                self._closed
                or pooled.spoiled
                or conn.is_closed()
                # A transaction left open (a failed ROLLBACK): not reusable.
                or conn.is_in_transaction()
            ):
                conn.terminate()
            elif time.monotonic() - pooled.born > MAX_LIFETIME_SECONDS:
                await _close(conn)
            else:
                self._idle.append(pooled)
        finally:
            self._free.release()

    async def discard_idle(self) -> None:
        idle, self._idle = self._idle, []
        for pooled in idle:
            await _close(pooled.conn)

    async def forget_statements(self) -> None:
        for pooled in self._idle:
            await pooled.conn.reload_schema_state()  # drops its caches; no round trip

    async def close(self) -> None:
        self._closed = True
        await self.discard_idle()


async def _close(conn: Conn) -> None:
    """Say goodbye to the server (a Terminate message), bounded; abort if that fails."""
    try:
        await conn.close(timeout=1.0)
    except Exception:  # asyncpg aborted the connection already
        conn.terminate()


class _Connection:
    """Statements on one checked-out connection."""

    __slots__ = ("conn", "pooled")
    dialect = "postgresql"

    def __init__(self, pooled: _Pooled) -> None:
        self.pooled = pooled
        self.conn = pooled.conn

    # Until a statement answers, an interruption (a cancelled request) leaves the protocol
    # mid-statement: ``spoiled`` stays set and the pool closes the connection. An error
    # answer leaves it ready for the next statement (inline try: no frame per statement).

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        pooled = self.pooled
        pooled.spoiled = True
        try:
            row = await self.conn.fetchrow(adapt(sql), *params)
        except Exception as exc:
            pooled.spoiled = False
            _translate(self.conn, exc)
            raise
        pooled.spoiled = False
        return None if row is None else dict(row.items())

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        pooled = self.pooled
        pooled.spoiled = True
        try:
            rows = await self.conn.fetch(adapt(sql), *params)
        except Exception as exc:
            pooled.spoiled = False
            _translate(self.conn, exc)
            raise
        pooled.spoiled = False
        return [dict(r.items()) for r in rows]

    async def execute(self, sql: str, params: Params = ()) -> int:
        pooled = self.pooled
        pooled.spoiled = True
        try:
            if params:
                status = await self.conn.execute(adapt(sql), *params)
            else:  # the simple protocol: one round trip, nothing prepared
                status = await self.conn.execute(sql)
        except Exception as exc:
            pooled.spoiled = False
            _translate(self.conn, exc)
            raise
        pooled.spoiled = False
        return _rowcount(status)


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
            return await work(_Connection(pooled))
        finally:
            await self._pool.release(pooled)

    async def _run(self, sql: str, work: Callable[[_Connection], Awaitable[T]]) -> T:
        try:
            return await self._attempt(work)
        except _ConnectionLost:
            # The connection was dropped without the checkout check seeing it. That usually
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
        """Several statements in one simple query (one implicit transaction)."""

        async def run(c: _Connection) -> None:
            await c.execute(script)

        await self._attempt(run)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        pooled = await self._pool.acquire()
        conn = pooled.conn
        try:
            tx = _Connection(pooled)
            await tx.execute("BEGIN")
            try:
                yield tx
            except Exception:
                # Best effort: when ROLLBACK cannot run (the connection is gone, or a
                # statement is still cancelling) the connection is not pooled again and
                # the server rolls back when it closes. The body's error is the one raised.
                if not pooled.spoiled and not conn.is_closed():
                    try:
                        await tx.execute("ROLLBACK")
                    except Exception:
                        pooled.spoiled = True
                raise
            except BaseException:  # cancelled: no round trip now; closing rolls back
                pooled.spoiled = True
                raise
            await tx.execute("COMMIT")
        except _ConnectionLost:
            await self._pool.discard_idle()  # as in _run; a transaction is never re-run
            raise
        except asyncpg.InvalidCachedStatementError as exc:
            # A migration changed a result type under a cached statement; asyncpg retries
            # such a statement by itself outside a transaction, and has dropped the stale
            # cache now, but this transaction is aborted: the client retries.
            raise DatabaseUnavailable(f"PostgreSQL: {one_line(exc)}") from exc
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
        # The schema may have changed: statements prepared on the idle connections may no
        # longer describe it (asyncpg re-prepares them by itself, but not inside a
        # transaction). Connections checked out now get that retry, or a 503 once.
        await self._pool.forget_statements()

    async def close(self) -> None:
        await self._pool.close()
