"""The repository layer (storage/repos/*.py) on both backends, against real databases.

Every test runs twice through the ``database_url`` fixture: once on a fresh SQLite file,
once on the session's PostgreSQL database (truncated before each test).
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from core_api.api_keys import repo as keys_repo
from core_api.api_keys.repo import ApiKeyRecord
from core_api.storage import (
    Database,
    DatabaseUnavailable,
    Executor,
    IntegrityError,
    PostgresDatabase,
    fetch_value,
    open_database,
)
from core_api.storage.migrate import migrate
from core_api.users import repo as users_repo
from core_api.users.repo import User
from core_api.web.listing import ListQuery
from core_api.workspaces import repo as ws_repo
from core_api.workspaces.repo import Workspace

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


async def list_workspaces(
    db: Database, user_id: int, query: ListQuery
) -> tuple[list[Workspace], int]:
    """A page and its total, both from the repository (the service caches the total)."""
    page = await ws_repo.page_for_user(db, user_id, query)
    return page, await ws_repo.count_for_user(db, user_id, query)


async def list_keys(
    db: Database, workspace_id: int, query: ListQuery, now: int
) -> tuple[list[ApiKeyRecord], int]:
    page = await keys_repo.page_in_workspace(db, workspace_id, query, now)
    return page, await keys_repo.count_in_workspace(db, workspace_id, query, now)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url)
    await migrate(database)
    yield database
    await database.close()


async def count(
    db: Executor, table: str, where: str = "1 = 1", params: tuple[Any, ...] = ()
) -> int:
    return int(await fetch_value(db, f"SELECT COUNT(*) AS n FROM {table} WHERE {where}", params))


async def make_workspace(
    db: Executor,
    owner_id: int,
    slug: str,
    *,
    name: str | None = None,
    tier: str = "free",
    now: int = NOW,
) -> Workspace:
    return await ws_repo.create(
        db,
        name=name or slug.title(),
        slug=slug,
        tier=tier,
        settings='{"timezone": "UTC"}',
        owner_id=owner_id,
        now=now,
    )


async def make_key(
    db: Executor,
    user_id: int,
    workspace_id: int,
    key_hash: str,
    *,
    name: str = "key",
    now: int = NOW,
    expires_at: int | None = None,
) -> int:
    made = await keys_repo.create(
        db,
        user_id=user_id,
        workspace_id=workspace_id,
        workspace_tier="free",
        name=name,
        prefix="sk_live_abc",
        key_hash=key_hash,
        scopes=["*"],
        rate_limit_tier=None,
        expires_at=expires_at,
        now=now,
    )
    return made.id


@pytest.fixture
async def owner(db: Database) -> User:
    return await users_repo.create(db, "Owner", "owner@example.test", NOW)


# --- users ------------------------------------------------------------------------------


async def test_users_create_and_lookup(db: Database) -> None:
    alice = await users_repo.create(db, "Alice", "alice@example.test", NOW)
    bob = await users_repo.create(db, "Bob", None, NOW + 1)
    assert isinstance(alice.id, int) and isinstance(bob.id, int)
    assert bob.id > alice.id
    assert alice == User(alice.id, "Alice", "alice@example.test", NOW, NOW)
    assert await users_repo.get_by_email(db, "alice@example.test") == alice
    assert await users_repo.get_by_email(db, "nobody@example.test") is None
    many = await users_repo.get_many(db, [alice.id, bob.id, 999_999])
    assert set(many) == {alice.id, bob.id}
    assert many[bob.id].email is None
    assert await users_repo.get_many(db, []) == {}


async def test_users_email_unique_but_null_repeats(db: Database) -> None:
    await users_repo.create(db, "A", "same@example.test", NOW)
    with pytest.raises(IntegrityError):
        await users_repo.create(db, "B", "same@example.test", NOW)
    # Users without an email do not collide with each other.
    await users_repo.create(db, "C", None, NOW)
    await users_repo.create(db, "D", None, NOW)
    assert await count(db, "users") == 3


# --- workspaces and members --------------------------------------------------------------


async def test_workspace_create_adds_owner_membership(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme", name="Acme", tier="pro")
    assert ws.slug == "acme" and ws.name == "Acme" and ws.tier == "pro"
    assert ws.role == "owner" and ws.owner_id == owner.id
    assert orjson.loads(ws.settings) == {"timezone": "UTC"}
    assert ws.created_at == ws.updated_at == NOW
    assert await ws_repo.get_for_user(db, owner.id, ws.id) == ws
    members = await ws_repo.members_of(db, [ws.id])
    assert [(m.user_id, m.role, m.name) for m in members[ws.id]] == [(owner.id, "owner", "Owner")]
    assert await ws_repo.slug_exists(db, "acme") is True
    assert await ws_repo.slug_exists(db, "acme-2") is False


async def test_workspace_get_is_scoped_to_members(db: Database, owner: User) -> None:
    stranger = await users_repo.create(db, "Stranger", "s@example.test", NOW)
    ws = await make_workspace(db, owner.id, "acme")
    assert await ws_repo.get_for_user(db, stranger.id, ws.id) is None
    assert await ws_repo.get_for_user(db, owner.id, ws.id + 1000) is None
    await ws_repo.add_member(db, ws.id, stranger.id, "member", NOW)
    found = await ws_repo.get_for_user(db, stranger.id, ws.id)
    assert found is not None and found.role == "member"


async def test_workspace_slug_unique_raises_integrity_error(db: Database, owner: User) -> None:
    await make_workspace(db, owner.id, "acme")
    with pytest.raises(IntegrityError):
        await make_workspace(db, owner.id, "acme", name="Other")
    assert await count(db, "workspaces") == 1
    # The failed insert left no orphan membership behind and the connection still works.
    assert await count(db, "workspace_members") == 1
    await make_workspace(db, owner.id, "acme-2")
    assert await ws_repo.slugs_like(db, "acme") == {"acme", "acme-2"}


async def test_slugs_like_matches_only_the_base_and_its_suffixes(db: Database, owner: User) -> None:
    for slug in ("acme", "acme-2", "acme-corp", "acmeco", "xacme"):
        await make_workspace(db, owner.id, slug)
    assert await ws_repo.slugs_like(db, "acme") == {"acme", "acme-2", "acme-corp"}


async def test_membership_constraints(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    # Primary key (workspace_id, user_id).
    with pytest.raises(IntegrityError):
        await ws_repo.add_member(db, ws.id, owner.id, "admin", NOW)
    other = await users_repo.create(db, "Other", None, NOW)
    # CHECK (role IN ('owner', 'admin', 'member')).
    with pytest.raises(IntegrityError):
        await ws_repo.add_member(db, ws.id, other.id, "superuser", NOW)
    # Foreign keys: no membership of a missing user or workspace.
    with pytest.raises(IntegrityError):
        await ws_repo.add_member(db, ws.id, 987_654, "member", NOW)
    with pytest.raises(IntegrityError):
        await ws_repo.add_member(db, 987_654, other.id, "member", NOW)
    assert await count(db, "workspace_members") == 1


async def test_workspace_needs_an_existing_owner(db: Database) -> None:
    with pytest.raises(IntegrityError):
        await make_workspace(db, 424_242, "ghost")
    assert await count(db, "workspaces") == 0


async def test_workspace_update(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    other = await make_workspace(db, owner.id, "other")
    await ws_repo.update(db, ws.id, {"name": "Renamed", "settings": '{"locale": "de"}'}, NOW + 5)
    updated = await ws_repo.get_for_user(db, owner.id, ws.id)
    assert updated is not None
    assert (updated.name, updated.settings, updated.updated_at) == (
        "Renamed",
        '{"locale": "de"}',
        NOW + 5,
    )
    assert updated.created_at == NOW and updated.slug == "acme"
    untouched = await ws_repo.get_for_user(db, owner.id, other.id)
    assert untouched == other


async def test_workspace_update_to_taken_slug_is_integrity_error(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    await make_workspace(db, owner.id, "taken")
    with pytest.raises(IntegrityError):
        await ws_repo.update(db, ws.id, {"slug": "taken"}, NOW + 1)
    again = await ws_repo.get_for_user(db, owner.id, ws.id)
    assert again is not None and again.slug == "acme"


async def test_deleting_a_workspace_cascades_to_members_and_keys(db: Database, owner: User) -> None:
    member = await users_repo.create(db, "Member", None, NOW)
    doomed = await make_workspace(db, owner.id, "doomed")
    kept = await make_workspace(db, owner.id, "kept")
    await ws_repo.add_member(db, doomed.id, member.id, "member", NOW)
    await make_key(db, owner.id, doomed.id, "hash-doomed-1")
    await make_key(db, member.id, doomed.id, "hash-doomed-2")
    kept_key = await make_key(db, owner.id, kept.id, "hash-kept")

    assert await ws_repo.delete(db, doomed.id) == 1
    assert await ws_repo.delete(db, doomed.id) == 0
    assert await count(db, "workspaces", "id = ?", (doomed.id,)) == 0
    assert await count(db, "workspace_members", "workspace_id = ?", (doomed.id,)) == 0
    assert await count(db, "api_keys", "workspace_id = ?", (doomed.id,)) == 0
    # Nothing else went with it: the other workspace, its key, both users.
    assert await count(db, "workspace_members", "workspace_id = ?", (kept.id,)) == 1
    assert await keys_repo.get(db, kept.id, kept_key) is not None
    assert await count(db, "users") == 2


async def test_deleting_a_user_who_owns_a_workspace_is_refused(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    with pytest.raises(IntegrityError):
        await db.execute("DELETE FROM users WHERE id = ?", (owner.id,))
    assert await ws_repo.get_for_user(db, owner.id, ws.id) is not None


async def test_deleting_a_user_cascades_to_memberships_and_keys(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    member = await users_repo.create(db, "Member", None, NOW)
    await ws_repo.add_member(db, ws.id, member.id, "admin", NOW)
    await make_key(db, member.id, ws.id, "member-hash")
    owner_key = await make_key(db, owner.id, ws.id, "owner-hash")
    assert await db.execute("DELETE FROM users WHERE id = ?", (member.id,)) == 1
    assert await count(db, "workspace_members", "user_id = ?", (member.id,)) == 0
    assert await count(db, "api_keys", "user_id = ?", (member.id,)) == 0
    assert await keys_repo.get(db, ws.id, owner_key) is not None


async def test_list_for_user_returns_only_the_users_workspaces(db: Database, owner: User) -> None:
    other = await users_repo.create(db, "Other", "other@example.test", NOW)
    mine = [await make_workspace(db, owner.id, f"mine-{i}", now=NOW + i) for i in range(3)]
    theirs = [await make_workspace(db, other.id, f"theirs-{i}") for i in range(2)]
    shared = theirs[0]
    await ws_repo.add_member(db, shared.id, owner.id, "member", NOW)

    rows, total = await list_workspaces(db, owner.id, ListQuery())
    assert total == 4
    assert [r.id for r in rows] == sorted([w.id for w in mine] + [shared.id])
    roles = {r.id: r.role for r in rows}
    assert roles[shared.id] == "member" and roles[mine[0].id] == "owner"
    assert theirs[1].id not in roles

    rows, total = await list_workspaces(db, other.id, ListQuery())
    assert total == 2 and {r.id for r in rows} == {w.id for w in theirs}

    nobody = await users_repo.create(db, "Nobody", None, NOW)
    assert await list_workspaces(db, nobody.id, ListQuery()) == ([], 0)


async def test_list_for_user_paginates_sorts_searches_and_filters(
    db: Database, owner: User
) -> None:
    other = await users_repo.create(db, "Other", None, NOW)
    for i, name in enumerate(["Bravo", "alpha", "Charlie", "Delta", "Echo"]):
        await make_workspace(db, owner.id, name.lower(), name=name, now=NOW + i * 1000)
    await make_workspace(db, other.id, "alpha-other", name="Alpha Other")

    page1, total = await list_workspaces(db, owner.id, ListQuery(page=1, per_page=2))
    page3, _ = await list_workspaces(db, owner.id, ListQuery(page=3, per_page=2))
    assert total == 5 and len(page1) == 2 and len(page3) == 1

    # (Mixed-case names are avoided: their order depends on the PostgreSQL collation.)
    by_name_desc, _ = await list_workspaces(
        db, owner.id, ListQuery(sort=[("name", True)], search="o")
    )
    assert [r.name for r in by_name_desc] == ["Echo", "Bravo"]
    by_created_desc, _ = await list_workspaces(
        db, owner.id, ListQuery(sort=[("created_at", True)], per_page=3)
    )
    assert [r.name for r in by_created_desc] == ["Echo", "Delta", "Charlie"]

    found, total = await list_workspaces(db, owner.id, ListQuery(search="ALPHA"))
    assert total == 1 and [r.slug for r in found] == ["alpha"]
    # LIKE wildcards in the search text are not wildcards.
    assert (await list_workspaces(db, owner.id, ListQuery(search="%")))[1] == 5
    assert (await list_workspaces(db, owner.id, ListQuery(search="_lpha")))[1] == 1

    recent, total = await list_workspaces(
        db, owner.id, ListQuery(date_filters=[("created_at", ">", NOW + 2000)])
    )
    assert total == 2 and {r.name for r in recent} == {"Delta", "Echo"}


# --- api keys ----------------------------------------------------------------------------


async def test_api_key_insert_get_and_lookup_by_hash(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme", tier="pro")
    key_id = await make_key(db, owner.id, ws.id, "h1", name="Production", expires_at=NOW + 10)
    row = await keys_repo.get(db, ws.id, key_id)
    assert row is not None
    assert (row.id, row.name, row.prefix, row.workspace_tier) == (
        key_id,
        "Production",
        "sk_live_abc",
        "pro",
    )
    assert row.scopes == ("*",)
    assert row.expires_at == NOW + 10 and row.last_used_at is None
    assert type(row) is ApiKeyRecord  # only the hash lookup returns the hash
    live = await keys_repo.get_live_by_hash(db, "h1")
    assert live is not None and live.id == key_id and live.key_hash == "h1"
    assert live.workspace_tier == "pro"
    assert await keys_repo.get_live_by_hash(db, "nope") is None
    # A key is only visible through its own workspace.
    other_ws = await make_workspace(db, owner.id, "other")
    assert await keys_repo.get(db, other_ws.id, key_id) is None


async def test_api_key_hash_unique_and_foreign_keys(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    await make_key(db, owner.id, ws.id, "dup")
    with pytest.raises(IntegrityError):
        await make_key(db, owner.id, ws.id, "dup")
    with pytest.raises(IntegrityError):
        await make_key(db, owner.id, 31_337, "no-such-workspace")
    with pytest.raises(IntegrityError):
        await make_key(db, 31_337, ws.id, "no-such-user")
    assert await count(db, "api_keys") == 1


async def test_api_key_revoke(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    key_id = await make_key(db, owner.id, ws.id, "h-revoke")
    other_id = await make_key(db, owner.id, ws.id, "h-other")
    assert await keys_repo.revoke(db, key_id, NOW + 1) == 1
    assert await keys_repo.revoke(db, key_id, NOW + 2) == 0  # already revoked: no second write
    assert (
        await fetch_value(db, "SELECT revoked_at FROM api_keys WHERE id = ?", (key_id,)) == NOW + 1
    )
    assert await keys_repo.get(db, ws.id, key_id) is None
    assert await keys_repo.get_live_by_hash(db, "h-revoke") is None
    assert await keys_repo.get_live_by_hash(db, "h-other") is not None
    rows, total = await list_keys(db, ws.id, ListQuery(), NOW + 3)
    assert total == 1 and [r.id for r in rows] == [other_id]


async def test_api_key_rotation_and_status_filters(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    old = await make_key(db, owner.id, ws.id, "h-old", name="Old")
    new = await make_key(db, owner.id, ws.id, "h-new", name="New")
    expired = await make_key(db, owner.id, ws.id, "h-exp", name="Expired", expires_at=NOW + 50)
    await keys_repo.mark_rotated(db, old, new, NOW + 100, NOW + 1)
    row = await keys_repo.get(db, ws.id, old)
    assert row is not None
    assert (row.rotated_to_id, row.grace_period_ends_at, row.updated_at) == (
        new,
        NOW + 100,
        NOW + 1,
    )

    async def ids(status: str | None, now: int) -> list[int]:
        rows, _ = await list_keys(db, ws.id, ListQuery(status=status), now)
        return [r.id for r in rows]

    assert await ids(None, NOW + 60) == [old, new, expired]
    assert await ids("active", NOW + 60) == [new]
    assert await ids("rotating", NOW + 60) == [old]
    assert await ids("expired", NOW + 60) == [expired]
    assert await ids("expired", NOW + 200) == [old, expired]
    assert await ids("rotating", NOW + 200) == []


async def test_api_key_list_is_scoped_sorted_and_searchable(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    other = await make_workspace(db, owner.id, "other")
    a = await make_key(db, owner.id, ws.id, "ha", name="Mobile App", now=NOW)
    b = await make_key(db, owner.id, ws.id, "hb", name="Backend", now=NOW + 1)
    await make_key(db, owner.id, other.id, "hc", name="Mobile Other")
    rows, total = await list_keys(db, ws.id, ListQuery(sort=[("name", False)]), NOW)
    assert total == 2 and [r.id for r in rows] == [b, a]
    rows, total = await list_keys(db, ws.id, ListQuery(search="mobile"), NOW)
    assert total == 1 and [r.id for r in rows] == [a]
    rows, total = await list_keys(db, ws.id, ListQuery(per_page=1, page=2), NOW)
    assert total == 2 and [r.id for r in rows] == [b]


async def test_record_last_used_only_moves_forward(db: Database, owner: User) -> None:
    ws = await make_workspace(db, owner.id, "acme")
    k1 = await make_key(db, owner.id, ws.id, "lu-1")
    k2 = await make_key(db, owner.id, ws.id, "lu-2")

    async def last_used(key_id: int) -> int | None:
        return await fetch_value(db, "SELECT last_used_at FROM api_keys WHERE id = ?", (key_id,))

    await keys_repo.record_last_used(db, [(k1, NOW + 1000)])
    assert await last_used(k1) == NOW + 1000 and await last_used(k2) is None
    await keys_repo.record_last_used(db, [(k1, NOW + 500)])  # older: ignored
    assert await last_used(k1) == NOW + 1000
    await keys_repo.record_last_used(db, [(k1, NOW + 1000)])  # equal: no change either way
    assert await last_used(k1) == NOW + 1000
    # A batch from several workers, out of order, for both keys.
    await keys_repo.record_last_used(
        db, [(k2, NOW + 300), (k1, NOW + 3000), (k2, NOW + 200), (k1, NOW + 2500)]
    )
    assert await last_used(k1) == NOW + 3000 and await last_used(k2) == NOW + 300
    # Unknown keys (deleted meanwhile) are skipped without error.
    await keys_repo.record_last_used(db, [(999_999, NOW)])
    await keys_repo.record_last_used(db, [])
    # last_used_at is bookkeeping, not an edit: updated_at stays.
    assert await fetch_value(db, "SELECT updated_at FROM api_keys WHERE id = ?", (k1,)) == NOW


# --- transactions ------------------------------------------------------------------------


class Boom(Exception):
    pass


async def test_transaction_rollback_on_exception_leaves_nothing(db: Database) -> None:
    with pytest.raises(Boom):
        async with db.transaction() as tx:
            user = await users_repo.create(tx, "Temp", "temp@example.test", NOW)
            ws = await make_workspace(tx, user.id, "temp")
            await make_key(tx, user.id, ws.id, "temp-hash")
            # Inside the transaction its own writes are visible.
            assert await count(tx, "api_keys") == 1
            raise Boom
    for table in ("users", "workspaces", "workspace_members", "api_keys"):
        assert await count(db, table) == 0, table
    # The connection is usable afterwards (not stuck inside the aborted transaction).
    await users_repo.create(db, "After", "temp@example.test", NOW)
    assert await count(db, "users") == 1


async def test_integrity_error_inside_a_transaction_rolls_back_everything(
    db: Database, owner: User
) -> None:
    await make_workspace(db, owner.id, "acme")
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            user = await users_repo.create(tx, "Second", "second@example.test", NOW)
            await make_workspace(tx, user.id, "acme")
    assert await users_repo.get_by_email(db, "second@example.test") is None
    assert await count(db, "workspaces") == 1
    # And a following transaction commits normally.
    async with db.transaction() as tx:
        user = await users_repo.create(tx, "Third", "third@example.test", NOW)
        await make_workspace(tx, user.id, "acme-3")
    assert await count(db, "workspaces") == 2


async def test_committed_transaction_is_visible_to_another_connection(
    database_url: str, db: Database
) -> None:
    async with db.transaction() as tx:
        await users_repo.create(tx, "Durable", "durable@example.test", NOW)
    other = await open_database(database_url)
    try:
        assert await users_repo.get_by_email(other, "durable@example.test") is not None
    finally:
        await other.close()


async def test_reads_do_not_wait_for_an_open_transaction(db: Database, owner: User) -> None:
    """A read outside a transaction answers while another request's transaction is open
    (SQLite: the reader connection; PostgreSQL: another pooled connection), sees the last
    commit and not the open transaction's writes, and sees them once committed. With one
    SQLite connection per process, the read waited for the whole transaction."""
    import asyncio

    await make_workspace(db, owner.id, "before")
    inside, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as tx:
            await make_workspace(tx, owner.id, "during")
            inside.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await asyncio.wait_for(inside.wait(), 10)
    try:
        # Would time out if the read queued behind the transaction.
        seen = await asyncio.wait_for(count(db, "workspaces"), 5)
        assert seen == 1  # the last commit, not the open transaction's insert
        # A write outside the transaction still goes through the writer (and so waits).
        blocked = asyncio.create_task(users_repo.create(db, "Late", "late@example.test", NOW))
        await asyncio.sleep(0.2)
        assert not blocked.done() or db.dialect == "postgresql"
    finally:
        release.set()
        await asyncio.wait_for(task, 10)
    await asyncio.wait_for(blocked, 10)
    assert await count(db, "workspaces") == 2
    assert await users_repo.get_by_email(db, "late@example.test") is not None


async def test_bound_parameters_are_not_sql(db: Database) -> None:
    nasty = "x'); DROP TABLE users; --"
    user = await users_repo.create(db, nasty, "50%_off?@example.test", NOW)
    assert user.name == nasty
    found = await users_repo.get_by_email(db, "50%_off?@example.test")
    assert found is not None and found.id == user.id
    assert await count(db, "users") == 1


async def test_any_user(db: Database) -> None:
    assert await users_repo.any_user(db) is False
    await users_repo.create(db, "First", None, NOW)
    assert await users_repo.any_user(db) is True


async def test_ping_answers_or_says_unavailable(database_url: str) -> None:
    database = await open_database(database_url)
    try:
        await database.ping()
    finally:
        await database.close()
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = PostgresDatabase(f"postgresql://postgres@127.0.0.1:{port}/test")
    try:
        with pytest.raises(DatabaseUnavailable):
            await unreachable.ping()
    finally:
        await unreachable.close()


async def test_sqlite_errors_are_storage_errors_once(tmp_path: Path) -> None:
    """A lock held by another process is "not now" (503 at the API); bad SQL stays a bug."""
    database = await open_database(f"sqlite:///{tmp_path}/db.sqlite")
    await migrate(database)
    await database.execute("PRAGMA busy_timeout=0")  # fail at once instead of after 10 s
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseUnavailable, match="locked"):
            await users_repo.create(database, "Blocked", None, NOW)
        other.execute("ROLLBACK")
        await users_repo.create(database, "Free", "free@example.test", NOW)
        with pytest.raises(IntegrityError):
            await users_repo.create(database, "Twin", "free@example.test", NOW)
        with pytest.raises(sqlite3.OperationalError):
            await database.execute("SELEKT 1")
    finally:
        other.close()
        await database.close()


async def test_sqlite_transaction_waits_for_another_writer_then_proceeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN IMMEDIATE retries in steps of at most a millisecond while another process
    holds the write lock, goes ahead as soon as it is released, and gives up as "not now"
    (503 at the API) after the busy timeout."""
    import threading

    from core_api.storage import sqlite as sqlite_backend

    database = await open_database(f"sqlite:///{tmp_path}/db.sqlite")
    await migrate(database)
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, lambda: other.execute("ROLLBACK")).start()
        async with database.transaction() as tx:  # waits about 0.3 s, then holds the lock
            await users_repo.create(tx, "After", "after@example.test", NOW)
        assert await users_repo.get_by_email(database, "after@example.test") is not None

        monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_S", 0.2)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseUnavailable):
            async with database.transaction() as tx:
                await users_repo.create(tx, "Never", "never@example.test", NOW)
        other.execute("ROLLBACK")
        assert await users_repo.get_by_email(database, "never@example.test") is None
        async with database.transaction() as tx:  # the connection is not left in a transaction
            await users_repo.create(tx, "Later", "later@example.test", NOW)
    finally:
        other.close()
        await database.close()
