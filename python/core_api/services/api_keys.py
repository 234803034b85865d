"""API keys: create, list, get, rotate, revoke. The full key is returned only by create
and rotate; only its HMAC is stored."""

from __future__ import annotations

from typing import Any

import orjson

from .. import _native, scopes
from ..auth import Principal
from ..clock import Clock, iso
from ..errors import AccessDenied, NotFound, ValidationFailed
from ..invalidation import Invalidator
from ..plans import Plans
from ..querying import ListQuery
from ..storage import Database, Executor, Row
from ..storage.repos import api_keys as repo
from ..storage.repos import users as users_repo
from ..storage.repos import workspaces as workspaces_repo

DEFAULT_SCOPES = ["read", "write"]
MANAGER_ROLES = frozenset({"owner", "admin"})
MAX_GRACE_HOURS = 24 * 30


def present(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": orjson.loads(row["scopes"]),
        "rate_limit_tier": row["rate_limit_tier"] or row["workspace_tier"],
        "last_used_at": iso(row["last_used_at"]),
        "expires_at": iso(row["expires_at"]),
        "grace_period_ends_at": iso(row["grace_period_ends_at"]),
        "created_at": iso(row["created_at"]),
    }


def present_with_secret(row: Row, key: str, *fields: str) -> dict[str, Any]:
    """The one-time view of a key (create, rotate): the full key beside chosen fields."""
    item = present(row)
    return {
        "id": item["id"],
        "name": item["name"],
        "key": key,
        "prefix": item["prefix"],
        **{name: item[name] for name in fields},
    }


class ApiKeyService:
    def __init__(
        self, db: Database, plans: Plans, clock: Clock, pepper: bytes, invalidator: Invalidator
    ) -> None:
        self.db, self.plans, self.clock, self.pepper = db, plans, clock, pepper
        self.invalidator = invalidator

    def validate_scopes(self, requested: list[str], principal: Principal) -> None:
        invalid = [s for s in requested if not scopes.is_valid(s)]
        if invalid:
            raise ValidationFailed.field(
                "scopes",
                f"Invalid scope(s): {', '.join(invalid)}. "
                "Use resource:action with action read, write, delete or *.",
            )
        broader = [s for s in requested if not scopes.covers(principal.scopes, s)]
        if broader:
            raise ValidationFailed.field(
                "scopes", f"A key cannot grant scopes broader than its own: {', '.join(broader)}."
            )

    def validate_tier(self, tier: str | None, workspace_tier: str) -> None:
        if tier is None:
            return
        if tier not in self.plans.tiers:
            options = ", ".join(self.plans.names())
            raise ValidationFailed.field(
                "rate_limit_tier",
                f"The selected rate_limit_tier is invalid. Valid tiers: {options}.",
            )
        if self.plans.exceeds(tier, workspace_tier):
            raise ValidationFailed.field(
                "rate_limit_tier",
                f"The rate_limit_tier may not exceed the workspace tier ({workspace_tier}).",
            )

    async def create(
        self,
        tx: Executor,
        *,
        user_id: int,
        workspace_id: int,
        name: str,
        key_scopes: list[str],
        tier: str | None,
        expires_at: int | None,
        rate_bucket_id: int | None = None,
    ) -> tuple[Row, str]:
        key = _native.generate_key()
        key_id = await repo.insert(
            tx,
            user_id=user_id,
            workspace_id=workspace_id,
            name=name,
            prefix=_native.key_prefix(key),
            key_hash=_native.hash_key(self.pepper, key).hex(),
            scopes=orjson.dumps(key_scopes).decode(),
            rate_limit_tier=tier,
            expires_at=expires_at,
            now=self.clock.now_ms(),
            rate_bucket_id=rate_bucket_id,
        )
        row = await repo.get(tx, workspace_id, key_id)
        assert row is not None
        return row, key

    async def create_for(
        self,
        principal: Principal,
        workspace: Row,
        name: str,
        key_scopes: list[str] | None,
        tier: str | None,
        expires_at: int | None,
    ) -> tuple[Row, str]:
        key_scopes = DEFAULT_SCOPES if key_scopes is None else key_scopes
        self.validate_scopes(key_scopes, principal)
        self.validate_tier(tier, workspace["tier"])
        if expires_at is not None and expires_at <= self.clock.now_ms():
            raise ValidationFailed.field(
                "expires_at", "The expires_at must be a date in the future."
            )
        async with self.db.transaction() as tx:
            return await self.create(
                tx,
                user_id=principal.user_id,
                workspace_id=int(workspace["id"]),
                name=name,
                key_scopes=key_scopes,
                tier=tier,
                expires_at=expires_at,
            )

    async def get(self, workspace_id: int, key_id: int) -> Row:
        row = await repo.get(self.db, workspace_id, key_id)
        if row is None:
            raise NotFound()
        return row

    async def list_page(self, workspace_id: int, query: ListQuery) -> tuple[list[Row], int]:
        return await repo.list_in_workspace(self.db, workspace_id, query, self.clock.now_ms())

    def _check_manage(self, principal: Principal, workspace: Row, row: Row) -> None:
        if int(row["user_id"]) != principal.user_id and workspace["role"] not in MANAGER_ROLES:
            raise AccessDenied(
                message="Insufficient permissions. Only the key's owner or a workspace "
                "owner or admin may change it"
            )

    async def rotate(
        self, principal: Principal, workspace: Row, key_id: int, grace_hours: int
    ) -> tuple[Row, str, int]:
        old = await self.get(int(workspace["id"]), key_id)
        self._check_manage(principal, workspace, old)
        now = self.clock.now_ms()
        if old["rotated_to_id"] is not None:
            raise ValidationFailed.field("id", "This key has already been rotated.")
        if old["expires_at"] is not None and old["expires_at"] <= now:
            raise ValidationFailed.field("id", "An expired key cannot be rotated.")
        grace_ends = now + grace_hours * 3_600_000
        async with self.db.transaction() as tx:
            new, key = await self.create(
                tx,
                user_id=int(old["user_id"]),
                workspace_id=int(old["workspace_id"]),
                name=old["name"],
                key_scopes=orjson.loads(old["scopes"]),
                tier=old["rate_limit_tier"],
                expires_at=old["expires_at"],
                # One budget across a rotation chain: rotating never refills the bucket.
                rate_bucket_id=int(old["rate_bucket_id"] or old["id"]),
            )
            if not await repo.mark_rotated(tx, key_id, int(new["id"]), grace_ends, now):
                # A concurrent rotation or revocation won: the successor is rolled back.
                raise ValidationFailed.field("id", "This key has already been rotated.")
        await self.invalidator.changed()
        return new, key, grace_ends

    async def revoke(self, principal: Principal, workspace: Row, key_id: int) -> None:
        row = await self.get(int(workspace["id"]), key_id)
        self._check_manage(principal, workspace, row)
        async with self.db.transaction() as tx:
            await repo.revoke(tx, key_id, self.clock.now_ms())
        await self.invalidator.changed()

    async def includes(
        self, rows: list[Row], names: list[str], workspace: Row
    ) -> dict[str, dict[int, Any]]:
        loaded: dict[str, dict[int, Any]] = {}
        if "workspace" in names:
            summary = {
                "id": workspace["id"],
                "name": workspace["name"],
                "slug": workspace["slug"],
                "tier": workspace["tier"],
            }
            loaded["workspace"] = {int(r["id"]): summary for r in rows}
        if "user" in names:
            users = await users_repo.get_many(self.db, sorted({int(r["user_id"]) for r in rows}))
            loaded["user"] = {
                int(r["id"]): {"id": u["id"], "name": u["name"], "email": u["email"]}
                for r in rows
                if (u := users.get(int(r["user_id"]))) is not None
            }
        return loaded


async def bootstrap(
    db: Database,
    service: ApiKeyService,
    plans: Plans,
    clock: Clock,
    *,
    name: str,
    tier: str | None,
    email: str | None,
) -> dict[str, Any]:
    """A user, a workspace they own and a ``*`` key: the first credentials of a deployment."""
    from .workspaces import DEFAULT_SETTINGS, slugify
    from .workspaces import present as present_workspace

    tier = tier or plans.default_tier
    if tier not in plans.tiers:
        raise ValidationFailed.field(
            "tier", f"Unknown tier {tier!r}; valid: {', '.join(plans.names())}"
        )
    now = clock.now_ms()
    async with db.transaction() as tx:
        user = await users_repo.create(tx, name, email, now)
        base = slugify(name)
        taken = await workspaces_repo.slugs_like(tx, base)
        slug, n = base, 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        workspace = await workspaces_repo.create(
            tx,
            name=name,
            slug=slug,
            tier=tier,
            settings=orjson.dumps(DEFAULT_SETTINGS).decode(),
            owner_id=int(user["id"]),
            now=now,
        )
        row, key = await service.create(
            tx,
            user_id=int(user["id"]),
            workspace_id=int(workspace["id"]),
            name=f"{name} bootstrap key",
            key_scopes=["*"],
            tier=None,
            expires_at=None,
        )
    return {
        "user": {
            "id": user["id"],
            "name": user["name"],
            "email": user["email"],
            "created_at": iso(user["created_at"]),
        },
        "workspace": present_workspace(workspace),
        "api_key": {**present(row), "key": key},
    }
