"""Migrations: both dialects give the same logical schema; migrate() is idempotent and safe
when several processes run it at once.

The logical schema is read back from the databases themselves (SQLite PRAGMAs and
``sqlite_master``; PostgreSQL ``information_schema`` and ``pg_catalog``), never from the
migration files, and normalised to what both dialects can express:

* column type class (integer / text / bytes / real / ...), nullability, default, and
  whether the column is an auto-generated id (SQLite rowid alias with AUTOINCREMENT,
  PostgreSQL identity or sequence default);
* primary key (ordered), every other index as (columns, unique, partial, explicit name or
  None when it only backs a UNIQUE constraint), foreign keys with ON DELETE / ON UPDATE
  actions, and CHECK constraints as (columns referenced, literals used).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core_api.config import sqlite_path
from core_api.storage import open_database
from core_api.storage.migrate import available, migrate
from core_api.storage.postgres import PostgresDatabase
from support import clean_env, core_api_command, fresh_database

EXPECTED_TABLES = {
    "schema_migrations",
    "users",
    "workspaces",
    "workspace_members",
    "workspace_member_counts",
    "api_keys",
    "idempotency_records",
    "instance",
    "job_leases",
    "pixel_sites",
    "pixel_stats_days",
    "pixel_site_purges",
    "pixel_events",
    "pixel_salts",
    "pixel_bot_counts",
    "webhook_endpoints",
    "events",
    "webhook_deliveries",
    "webhook_attempts",
    "entitlement_usage",
    "entitlement_events",
    "entitlement_notices",
    "entitlement_overrides",
    "mcp_audit",
    "seo_reports",
    "seo_issues",
    "seo_totals",
    "seo_days",
    "seo_issue_counts",
}

# ---------------------------------------------------------------------------------------
# Normalisation shared by both dialects
# ---------------------------------------------------------------------------------------

_LITERAL = re.compile(r"'((?:[^']|'')*)'")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def sqlite_type_class(declared: str) -> str:
    """SQLite's own affinity rules (https://sqlite.org/datatype3.html#affinity_name_examples)."""
    t = declared.upper()
    if "INT" in t:
        return "integer"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if t == "" or "BLOB" in t:
        return "bytes"
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return "real"
    return f"numeric({t})"


PG_TYPES = {
    "smallint": "integer",
    "integer": "integer",
    "bigint": "integer",
    "text": "text",
    "character varying": "text",
    "character": "text",
    "bytea": "bytes",
    "real": "real",
    "double precision": "real",
}


def pg_type_class(data_type: str) -> str:
    return PG_TYPES.get(data_type, f"unmapped({data_type})")


def normalise_default(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    # PostgreSQL spells a text literal default as '...'::text, SQLite keeps it as written.
    text = re.sub(r"::[a-z ]+(\[\])?$", "", text)
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return text


def normalise_expression(text: str) -> str:
    """An index column or predicate as both dialects can be compared: PostgreSQL prints
    ``lower(name)`` and ``(revoked_at IS NULL)``, SQLite keeps the text as written."""
    text = re.sub(r"\s+", " ", text.strip().strip(";")).lower().replace('"', "")
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    # PostgreSQL prints ``x IN ('a', 'b')`` as ``x = ANY (ARRAY['a'::text, 'b'::text])``.
    text = re.sub(
        r"(\w+) = any \(array\[(.*?)\]\)",
        lambda m: f"{m.group(1)} in ({m.group(2).replace('::text', '')})",
        text,
    )
    return text


def sqlite_index_terms(create_sql: str) -> list[str]:
    """The key terms of ``CREATE INDEX ... ON t (a, LOWER(b), c) [WHERE ...]``."""
    start = create_sql.index("(") + 1
    depth, terms, current = 1, [], ""
    for ch in create_sql[start:]:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            break
        if ch == "," and depth == 1:
            terms.append(current)
            current = ""
        else:
            current += ch
    return [*terms, current]


def check_signature(expression: str, columns: set[str]) -> tuple[frozenset[str], frozenset[str]]:
    """What a CHECK is about, comparable across dialects: columns named, literals used."""
    literals = {m.replace("''", "'") for m in _LITERAL.findall(expression)}
    bare = _LITERAL.sub(" ", expression)
    literals |= set(_NUMBER.findall(bare))
    named = {w for w in _WORD.findall(bare) if w in columns}
    return frozenset(named), frozenset(literals)


def extract_checks(create_sql: str) -> list[str]:
    """Every ``CHECK (...)`` expression in a CREATE TABLE statement (balanced parentheses)."""
    found = []
    for match in re.finditer(r"\bCHECK\s*\(", create_sql, re.IGNORECASE):
        depth, start = 1, match.end()
        i = start
        in_string = False
        while depth and i < len(create_sql):
            ch = create_sql[i]
            if ch == "'":
                in_string = not in_string
            elif not in_string:
                depth += {"(": 1, ")": -1}.get(ch, 0)
            i += 1
        found.append(create_sql[start : i - 1])
    return found


# ---------------------------------------------------------------------------------------
# Introspection
# ---------------------------------------------------------------------------------------

ON_ACTION_PG = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}


def sqlite_schema(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        schema: dict[str, Any] = {}
        for table in tables:
            (create_sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            # cid, name, type, notnull, dflt_value, pk
            pk = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            rowid_alias = len(pk) == 1 and next(
                r[2].upper() == "INTEGER" for r in info if r[1] == pk[0]
            )
            columns = {}
            for _cid, name, declared, notnull, default, in_pk in info:
                is_rowid = rowid_alias and in_pk
                columns[name] = {
                    "type": sqlite_type_class(declared),
                    # A rowid alias can never be NULL; any other SQLite PRIMARY KEY column
                    # accepts NULL unless declared NOT NULL (a documented SQLite quirk).
                    "nullable": not (notnull or is_rowid),
                    "default": normalise_default(default),
                    # AUTOINCREMENT: ids are never reused, as with a PostgreSQL identity.
                    "generated": bool(is_rowid and "AUTOINCREMENT" in create_sql.upper()),
                }
            indexes = set()
            for _seq, name, unique, origin, partial in conn.execute(
                f'PRAGMA index_list("{table}")'
            ).fetchall():
                if origin == "pk":
                    continue
                info_rows = sorted(conn.execute(f'PRAGMA index_info("{name}")').fetchall())
                row = conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
                ).fetchone()
                index_sql = row[0] if row else None
                terms = sqlite_index_terms(index_sql) if index_sql else []
                # An expression column has no name (cid -2): its text comes from the SQL.
                cols = tuple(
                    r[2] if r[1] != -2 else normalise_expression(terms[r[0]]) for r in info_rows
                )
                explicit = name if origin == "c" else None
                predicate: str | bool = False
                if partial and index_sql:
                    where = re.split(r"\bWHERE\b", index_sql, maxsplit=1, flags=re.IGNORECASE)
                    predicate = normalise_expression(where[1])
                indexes.add((cols, bool(unique), predicate, explicit))
            fks: dict[int, dict[str, Any]] = {}
            for fid, _seq, ref, frm, to, on_update, on_delete, _match in conn.execute(
                f'PRAGMA foreign_key_list("{table}")'
            ).fetchall():
                fk = fks.setdefault(
                    fid, {"from": [], "ref": ref, "to": [], "upd": on_update, "del": on_delete}
                )
                fk["from"].append(frm)
                fk["to"].append(to)
            foreign_keys = set()
            for fk in fks.values():
                to = fk["to"]
                if any(t is None for t in to):  # REFERENCES parent without a column list
                    parent = conn.execute(f'PRAGMA table_info("{fk["ref"]}")').fetchall()
                    to = [r[1] for r in sorted((r for r in parent if r[5]), key=lambda r: r[5])]
                foreign_keys.add((tuple(fk["from"]), fk["ref"], tuple(to), fk["del"], fk["upd"]))
            names = set(columns)
            checks = {check_signature(e, names) for e in extract_checks(create_sql)}
            schema[table] = {
                "columns": columns,
                "primary_key": pk,
                "indexes": indexes,
                "foreign_keys": foreign_keys,
                "checks": checks,
            }
        return schema
    finally:
        conn.close()


def pg_schema(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        schema: dict[str, Any] = {}
        for table in tables:
            columns = {}
            for name, nullable, data_type, default, identity in conn.execute(
                "SELECT column_name, is_nullable, data_type, column_default, is_identity "
                "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
                (table,),
            ):
                generated = identity == "YES" or (default or "").startswith("nextval(")
                columns[name] = {
                    "type": pg_type_class(data_type),
                    "nullable": nullable == "YES",
                    "default": None if generated else normalise_default(default),
                    "generated": generated,
                }

            def attnames(table_oid_expr: str, keys: str) -> str:
                return (
                    f"ARRAY(SELECT a.attname FROM unnest({keys}) WITH ORDINALITY k(attnum, ord) "
                    f"JOIN pg_attribute a ON a.attrelid = {table_oid_expr} AND a.attnum = k.attnum "
                    "ORDER BY k.ord)"
                )

            oid = conn.execute("SELECT %s::regclass::oid", (f'public."{table}"',)).fetchone()[0]
            pk_row = conn.execute(
                f"SELECT {attnames('c.conrelid', 'c.conkey')} FROM pg_constraint c "
                "WHERE c.conrelid = %s AND c.contype = 'p'",
                (oid,),
            ).fetchone()
            pk = tuple(pk_row[0]) if pk_row else ()
            indexes = set()
            for name, unique, primary, partial, cols, backs_constraint in conn.execute(
                "SELECT ic.relname, ix.indisunique, ix.indisprimary, "
                "pg_get_expr(ix.indpred, ix.indrelid), "
                # Each key column's name, or its expression's text (lower(name)).
                "ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) "
                "FROM generate_series(1, ix.indnkeyatts) k ORDER BY k), "
                "EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid) "
                "FROM pg_index ix JOIN pg_class ic ON ic.oid = ix.indexrelid "
                "WHERE ix.indrelid = %s",
                (oid,),
            ):
                if primary:
                    continue
                predicate = normalise_expression(partial) if partial else False
                key = tuple(normalise_expression(c) for c in cols)
                indexes.add((key, unique, predicate, None if backs_constraint else name))
            foreign_keys = set()
            for cols, ref, ref_cols, on_delete, on_update in conn.execute(
                f"SELECT {attnames('c.conrelid', 'c.conkey')}, c.confrelid::regclass::text, "
                f"{attnames('c.confrelid', 'c.confkey')}, c.confdeltype, c.confupdtype "
                "FROM pg_constraint c WHERE c.conrelid = %s AND c.contype = 'f'",
                (oid,),
            ):
                foreign_keys.add(
                    (
                        tuple(cols),
                        ref.strip('"'),
                        tuple(ref_cols),
                        ON_ACTION_PG[on_delete],
                        ON_ACTION_PG[on_update],
                    )
                )
            names = set(columns)
            checks = {
                check_signature(definition, names)
                for (definition,) in conn.execute(
                    "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c "
                    "WHERE c.conrelid = %s AND c.contype = 'c'",
                    (oid,),
                )
            }
            schema[table] = {
                "columns": columns,
                "primary_key": pk,
                "indexes": indexes,
                "foreign_keys": foreign_keys,
                "checks": checks,
            }
        return schema


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


async def _migrate_url(url: str) -> list[str]:
    db = await open_database(url)
    try:
        return await migrate(db)
    finally:
        await db.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/schema.db"


@pytest.fixture
def fresh_pg() -> Any:
    with fresh_database("schema") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "fresh_pg"
    return str(request.getfixturevalue(fixture))


def introspect(url: str) -> dict[str, Any]:
    return sqlite_schema(sqlite_path(url)) if url.startswith("sqlite:") else pg_schema(url)


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


def test_both_dialects_have_the_same_migrations() -> None:
    sqlite_names = [(m.version, m.name) for m in available("sqlite")]
    pg_names = [(m.version, m.name) for m in available("postgresql")]
    assert sqlite_names, "no migrations found"
    assert sqlite_names == pg_names
    versions = [v for v, _ in sqlite_names]
    assert versions == sorted(set(versions)), "versions must be unique and ordered"


@pytest.mark.postgres
async def test_both_dialects_produce_the_same_logical_schema(
    sqlite_url: str, fresh_pg: str
) -> None:
    await _migrate_url(sqlite_url)
    await _migrate_url(fresh_pg)
    lite, pg = introspect(sqlite_url), introspect(fresh_pg)

    assert set(lite) == set(pg) == EXPECTED_TABLES
    for table in sorted(EXPECTED_TABLES):
        a, b = lite[table], pg[table]
        assert a["columns"] == b["columns"], table
        assert a["primary_key"] == b["primary_key"], table
        assert a["indexes"] == b["indexes"], table
        assert a["foreign_keys"] == b["foreign_keys"], table
        assert a["checks"] == b["checks"], table
    # No column in either dialect slipped through the type mapping.
    for schema in (lite, pg):
        for table, spec in schema.items():
            for column, col in spec["columns"].items():
                assert col["type"] in {"integer", "text", "bytes", "real"}, (table, column, col)


async def test_schema_has_the_constraints_the_repositories_rely_on(fresh_url: str) -> None:
    """Pins the important parts, so that both dialects cannot agree on a wrong schema."""
    await _migrate_url(fresh_url)
    schema = introspect(fresh_url)
    assert set(schema) == EXPECTED_TABLES

    assert schema["users"]["primary_key"] == ("id",)
    assert schema["users"]["columns"]["id"]["generated"] is True
    assert ((("email",), True, False, None)) in schema["users"]["indexes"]
    assert schema["users"]["columns"]["email"]["nullable"] is True

    ws = schema["workspaces"]
    assert (("slug",), True, False, None) in ws["indexes"]
    assert (("owner_id",), "users", ("id",), "RESTRICT", "NO ACTION") in ws["foreign_keys"]
    assert ws["columns"]["settings"]["default"] == "'{}'"
    assert all(not ws["columns"][c]["nullable"] for c in ("name", "slug", "tier", "owner_id"))

    members = schema["workspace_members"]
    assert members["primary_key"] == ("workspace_id", "user_id")
    assert members["foreign_keys"] == {
        (("workspace_id",), "workspaces", ("id",), "CASCADE", "NO ACTION"),
        (("user_id",), "users", ("id",), "CASCADE", "NO ACTION"),
    }
    assert members["checks"] == {(frozenset({"role"}), frozenset({"owner", "admin", "member"}))}
    # Lists walk these in page order (a page's cost does not grow with the collection).
    assert (
        ("user_id", "workspace_id", "role"),
        False,
        False,
        "workspace_members_user",
    ) in members["indexes"]
    assert (("lower(name)", "id"), False, False, "workspaces_name_ci") in ws["indexes"]

    keys = schema["api_keys"]
    assert (("key_hash",), True, False, None) in keys["indexes"]
    assert (("workspace_id",), "workspaces", ("id",), "CASCADE", "NO ACTION") in keys[
        "foreign_keys"
    ]
    assert (("user_id",), "users", ("id",), "CASCADE", "NO ACTION") in keys["foreign_keys"]
    live = "revoked_at is null"
    by_id = ("workspace_id", "id", "expires_at", "grace_period_ends_at")
    assert (by_id, False, live, "api_keys_live") in keys["indexes"]
    assert (("workspace_id", "lower(name)", "id"), False, live, "api_keys_live_name_ci") in keys[
        "indexes"
    ]
    for nullable in ("expires_at", "last_used_at", "revoked_at", "grace_period_ends_at"):
        assert keys["columns"][nullable]["nullable"] is True

    assert schema["idempotency_records"]["primary_key"] == ("api_key_id", "idempotency_key")
    assert schema["idempotency_records"]["columns"]["body"]["type"] == "bytes"

    assert schema["instance"]["primary_key"] == ("id",)

    sm = schema["schema_migrations"]
    assert sm["primary_key"] == ("version",)
    assert sm["columns"]["version"]["nullable"] is False


async def test_migrate_is_idempotent_and_records_versions(fresh_url: str) -> None:
    expected = [
        m.name for m in available("sqlite" if fresh_url.startswith("sqlite") else "postgresql")
    ]
    db = await open_database(fresh_url)
    try:
        first = await migrate(db)
        assert first == expected
        before = introspect(fresh_url)
        assert await migrate(db) == []
        assert await migrate(db) == []
        rows = await db.fetch_all(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        )
    finally:
        await db.close()
    assert [(int(r["version"]), r["name"]) for r in rows] == [
        (m.version, m.name) for m in available("sqlite")
    ]
    assert all(
        isinstance(r["applied_at"], int) and r["applied_at"] > 1_600_000_000_000 for r in rows
    )
    assert introspect(fresh_url) == before
    # A new connection (a restarted process) also finds nothing to do.
    assert await _migrate_url(fresh_url) == []


async def test_concurrent_migrate_in_one_process(fresh_url: str) -> None:
    """Several connectors migrating the same fresh database at once: one applies, none fail."""
    dbs = [await open_database(fresh_url) for _ in range(4)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(migrate(db) for db in dbs), return_exceptions=True), timeout=60
        )
    finally:
        for db in dbs:
            await db.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    applied = [name for r in results for name in r]  # type: ignore[union-attr]
    assert sorted(applied) == [m.name for m in available("sqlite")]
    assert await _migrate_url(fresh_url) == []


@pytest.mark.postgres
@pytest.mark.parametrize("round_", range(5))
async def test_concurrent_migrate_on_postgres_uses_the_advisory_lock(round_: int) -> None:
    """Separate pools (as separate nodes would have) race on an empty database, repeatedly."""
    with fresh_database("race") as url:
        dbs = [PostgresDatabase(url, pool_size=2) for _ in range(6)]
        for db in dbs:
            await db.open()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(migrate(db) for db in dbs), return_exceptions=True), timeout=60
            )
        finally:
            for db in dbs:
                await db.close()
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        assert errors == []
        applied = [name for r in results for name in r]  # type: ignore[union-attr]
        assert sorted(applied) == [m.name for m in available("postgresql")]
        with psycopg.connect(url) as conn:
            count = conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0]
        assert count == len(available("postgresql"))


@pytest.mark.postgres
def test_concurrent_migrate_processes_on_postgres(tmp_path: Path) -> None:
    """`core-api migrate` started three times at once (three nodes booting together)."""
    with fresh_database("procs") as url:
        env = clean_env(tmp_path, database_url=url, secret_key="x" * 40)
        procs = [
            subprocess.Popen(
                [*core_api_command(), "migrate"],
                env=env,
                cwd=tmp_path,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(3)
        ]
        outputs = []
        try:
            for proc in procs:
                out, err = proc.communicate(timeout=60)
                outputs.append((proc.returncode, out, err))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
        assert [rc for rc, _, _ in outputs] == [0, 0, 0], outputs
        counts = sorted(
            int(re.match(r"applied (\d+) migration", out).group(1))  # type: ignore[union-attr]
            for _, out, _ in outputs
        )
        assert counts == [0, 0, len(available("postgresql"))], outputs


def test_sqlite_migrations_enable_wal(tmp_path: Path, sqlite_url: str) -> None:
    asyncio.run(_migrate_url(sqlite_url))
    conn = sqlite3.connect(sqlite_path(sqlite_url))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
