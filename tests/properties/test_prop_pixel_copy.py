"""Pixel batches encoded by the Rust binary COPY encoder (``PixelBatch.copy_binary``) and
decoded by a real PostgreSQL: COPYed with the writer's own statement
(``ingest_repo.COPY_EVENTS``) into a temporary ``pixel_events`` made from the migration's
own definition, then read back equal to what was pushed.

One connection for the module; one COPY per example.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core_api
from core_api import _native
from core_api.pixel import ingest_repo

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MIGRATION = Path(core_api.__file__).parent / "storage/migrations/postgresql/0008_pixel_events.sql"
I64 = st.integers(-(2**63), 2**63 - 1)
EXTREMES = st.sampled_from([-(2**63), -1, 0, 1, 2**63 - 1])

# PostgreSQL text holds any Unicode but NUL (the ingest path refuses NUL). Astral
# characters (4 UTF-8 bytes) are drawn on purpose; surrogates cannot be encoded at all.
_chars = st.one_of(
    st.characters(codec="utf-8", exclude_characters="\x00"),
    st.characters(codec="utf-8", min_codepoint=0x10000),
)
texts = st.text(alphabet=_chars, max_size=40)
paths = st.one_of(texts, st.builds(lambda t: "/" + t, texts))
prop_values = st.one_of(
    st.none(),
    st.booleans(),
    I64,
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
props = st.one_of(
    st.none(),
    st.dictionaries(st.text(alphabet=_chars, min_size=1, max_size=12), prop_values, max_size=5).map(
        lambda d: orjson.dumps(d).decode()
    ),
)
ints = st.one_of(EXTREMES, I64)
Row = tuple[int, int, str, str, str | None, int, int | None, str, str, str | None]
events = st.tuples(
    ints,  # site_id
    ints,  # ts
    texts,  # name
    paths,
    st.one_of(st.none(), st.just(""), texts),  # referrer_source
    ints,  # visitor_id
    st.one_of(st.none(), ints),  # session_id
    texts,  # browser
    texts,  # device
    props,
)


def temp_table_sql() -> str:
    """The migration's ``CREATE TABLE pixel_events (...)``, as a temporary table."""
    match = re.search(r"CREATE TABLE pixel_events \(.*?\n\);", MIGRATION.read_text(), re.S)
    assert match is not None, "pixel_events definition not found in the migration"
    return match.group(0).replace("CREATE TABLE", "CREATE TEMP TABLE", 1)


@pytest.fixture(scope="module")
def conn(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_url, autocommit=True) as connection:
        # pg_temp comes first in the search path: COPY_EVENTS lands in the temporary table.
        connection.execute(temp_table_sql())
        yield connection


def copy_batch(conn: psycopg.Connection[Any], payload: bytes) -> list[Row]:
    conn.execute("DELETE FROM pixel_events")
    with conn.cursor() as cur, cur.copy(ingest_repo.COPY_EVENTS) as stream:
        stream.write(payload)
    columns = ", ".join(ingest_repo.COLUMNS)
    # ctid: the COPY's insertion order (a fresh, empty temporary table; no updates).
    return conn.execute(f"SELECT {columns} FROM pixel_events ORDER BY ctid").fetchall()


@SETTINGS
@given(batch=st.lists(events, max_size=8))
def test_postgresql_decodes_every_batch_to_the_pushed_events(
    conn: psycopg.Connection[Any], batch: list[Row]
) -> None:
    buffer = _native.PixelBuffer(max(1, len(batch)))
    for event in batch:
        assert buffer.push(*event)
    taken = buffer.take(len(batch) + 1)
    assert len(taken) == len(batch)
    assert taken.rows() == batch  # the SQLite path's rows, for comparison
    assert copy_batch(conn, taken.copy_binary()) == batch
    assert buffer.commit(taken) == len(batch)
    for row in batch:
        if row[9] is not None:
            orjson.loads(row[9])  # props stay valid JSON text


def test_columns_match_the_table(conn: psycopg.Connection[Any]) -> None:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'pixel_events'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ).fetchall()
    ]
    assert names == list(_native.PIXEL_COLUMNS)
