"""The PostgreSQL connector's driver-specific behaviour (asyncpg), on a real server:
placeholders, a statement interrupted mid-flight, prepared statements outliving a schema
change, constraint and timeout errors, and the TLS default for a server on this host.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from core_api.storage import Database, DatabaseUnavailable, IntegrityError, fetch_value
from core_api.storage.postgres import PostgresDatabase, Timeouts, adapt, default_ssl
from support import fresh_database

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def driver_db() -> Iterator[str]:
    with fresh_database("driver") as url:
        yield url


@pytest.fixture
async def db(driver_db: str) -> AsyncIterator[Database]:
    database = PostgresDatabase(driver_db, pool_size=2, timeouts=Timeouts(statement=30))
    await database.open()
    yield database
    await database.close()


def test_placeholders_are_numbered_once_per_statement() -> None:
    assert adapt("SELECT 1") == "SELECT 1"
    assert adapt("SELECT ? || '%', ?") == "SELECT $1 || '%', $2"
    assert adapt("UPDATE t SET a = ? WHERE b = ? AND c IN (?, ?)") == (
        "UPDATE t SET a = $1 WHERE b = $2 AND c IN ($3, $4)"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://127.0.0.1:5432/db", "allow"),
        ("postgresql://user@localhost/db", "allow"),
        ("postgresql://[::1]:5432/db", "allow"),
        ("postgresql://127.0.0.1,127.0.0.2/db", "allow"),
        ("postgresql://db.example.com/db", None),  # asyncpg's default: prefer
        ("postgresql://127.0.0.1,db.example.com/db", None),
        ("postgresql://127.0.0.1/db?sslmode=require", None),  # the URL decides
        ("postgresql:///db?host=/var/run/postgresql", None),  # a Unix socket: no TLS anyway
    ],
)
def test_tls_is_left_out_only_for_a_server_on_this_host(
    url: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)
    monkeypatch.delenv("PGHOST", raising=False)
    default_ssl.cache_clear()
    assert default_ssl(url) == expected


async def test_a_loopback_connection_does_not_negotiate_tls(db: Database) -> None:
    ssl = await fetch_value(db, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert ssl is False


async def test_values_round_trip_with_their_types(db: Database) -> None:
    row = await db.fetch_one(
        "SELECT CAST(? AS BIGINT) AS big, CAST(? AS TEXT) AS txt, CAST(? AS BYTEA) AS raw, "
        "CAST(? AS BIGINT) AS missing",
        (2**62, "é ' ?", b"\x00\x01", None),
    )
    assert row == {"big": 2**62, "txt": "é ' ?", "raw": b"\x00\x01", "missing": None}


async def test_execute_counts_rows_and_integrity_errors_translate(db: Database) -> None:
    await db.execute("DROP TABLE IF EXISTS driver_rows")
    await db.execute("CREATE TABLE driver_rows (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
    assert await db.execute("INSERT INTO driver_rows VALUES (?, ?), (?, ?)", (1, "a", 2, "b")) == 2
    assert await db.execute("UPDATE driver_rows SET name = ? WHERE id > ?", ("c", 0)) == 2
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO driver_rows VALUES (?, ?)", (1, "again"))
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO driver_rows VALUES (?, ?)", (3, "kept?"))
            await tx.execute("INSERT INTO driver_rows VALUES (?, ?)", (1, "again"))
    assert await fetch_value(db, "SELECT COUNT(*) FROM driver_rows") == 2  # rolled back
    assert await fetch_value(db, "SELECT COUNT(*) FROM driver_rows WHERE id = ?", (3,)) == 0


async def test_an_error_answer_keeps_the_connection(db: Database) -> None:
    """A refused statement (constraint, bad SQL) leaves the connection ready: it is pooled
    again, inside a transaction after its ROLLBACK; no reconnection per conflict."""
    await db.execute("DROP TABLE IF EXISTS driver_keep")
    await db.execute("CREATE TABLE driver_keep (id BIGINT PRIMARY KEY)")
    await db.execute("INSERT INTO driver_keep VALUES (?)", (1,))
    pid = await fetch_value(db, "SELECT pg_backend_pid()")
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO driver_keep VALUES (?)", (1,))
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO driver_keep VALUES (?)", (1,))
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO driver_keep VALUES (?)", (2,))
            raise RuntimeError("the caller gives up")
    assert await fetch_value(db, "SELECT pg_backend_pid()") == pid
    assert await fetch_value(db, "SELECT COUNT(*) FROM driver_keep") == 1


async def test_an_interrupted_statement_takes_its_connection_with_it(db: Database) -> None:
    """Cancelled mid-statement, the connection is closed (the server cancels the query
    when the client goes), not pooled for the next request half-way through a reply."""
    before = await fetch_value(db, "SELECT pg_backend_pid()")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await db.fetch_one("SELECT pg_sleep(30)")
    after = await fetch_value(db, "SELECT pg_backend_pid()")
    assert after != before
    assert await fetch_value(db, "SELECT 1 + ?", (1,)) == 2


async def test_a_transaction_cancelled_in_its_body_is_not_committed(db: Database) -> None:
    await db.execute("DROP TABLE IF EXISTS driver_cancel")
    await db.execute("CREATE TABLE driver_cancel (id BIGINT PRIMARY KEY)")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2), db.transaction() as tx:
            await tx.execute("INSERT INTO driver_cancel VALUES (?)", (1,))
            await tx.fetch_one("SELECT pg_sleep(30)")
    assert await fetch_value(db, "SELECT COUNT(*) FROM driver_cancel") == 0


async def test_a_statement_timeout_is_unavailable(driver_db: str) -> None:
    db = PostgresDatabase(driver_db, pool_size=1, timeouts=Timeouts(statement=0.05))
    await db.open()
    try:
        with pytest.raises(DatabaseUnavailable, match="statement timeout"):
            await db.fetch_one("SELECT pg_sleep(5)")
        assert await fetch_value(db, "SELECT 1") == 1  # the connection is still good
    finally:
        await db.close()


async def test_prepared_statements_survive_a_schema_change(driver_db: str, db: Database) -> None:
    """A column added under a cached ``SELECT *`` changes its result type: outside a
    transaction asyncpg prepares it again; inside one the transaction fails once with a
    503 (the client retries) and the next one runs."""
    await db.execute("DROP TABLE IF EXISTS driver_schema")
    await db.execute("CREATE TABLE driver_schema (id BIGINT PRIMARY KEY)")
    await db.execute("INSERT INTO driver_schema VALUES (?)", (1,))
    select = "SELECT * FROM driver_schema WHERE id = ?"
    assert await db.fetch_one(select, (1,)) == {"id": 1}
    async with db.transaction() as tx:  # the same pooled connection: cached there too
        assert await tx.fetch_one(select, (1,)) == {"id": 1}

    with psycopg.connect(driver_db, autocommit=True) as other:
        other.execute("ALTER TABLE driver_schema ADD COLUMN note TEXT DEFAULT 'x'")
    assert await db.fetch_one(select, (1,)) == {"id": 1, "note": "x"}

    with psycopg.connect(driver_db, autocommit=True) as other:
        other.execute("ALTER TABLE driver_schema ADD COLUMN more TEXT DEFAULT 'y'")
    with pytest.raises(DatabaseUnavailable, match="cached statement"):
        async with db.transaction() as tx:
            await tx.fetch_one(select, (1,))
    async with db.transaction() as tx:
        assert await tx.fetch_one(select, (1,)) == {"id": 1, "note": "x", "more": "y"}


async def test_scripts_run_whole(db: Database) -> None:
    await db.executescript(
        "DROP TABLE IF EXISTS driver_script; CREATE TABLE driver_script (id BIGINT); "
        "INSERT INTO driver_script VALUES (1), (2);"
    )
    assert await fetch_value(db, "SELECT SUM(id) FROM driver_script") == 2 + 1
