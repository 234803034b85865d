"""API keys: create, list, get, rotate, revoke. The full key is returned only by create
and rotate; only its HMAC is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from .. import _native
from ..clock import Clock, iso
from ..errors import AccessDenied, NotFound, ValidationFailed
from ..events import Notifier, publish

if TYPE_CHECKING:
    from ..entitlements.service import EntitlementService
from ..gateway import scopes
from ..gateway.auth import Principal
from ..gateway.invalidation import Invalidator
from ..plans import Plans
from ..storage import Database, Executor
from ..users import repo as users_repo
from ..web.listing import ListQuery
from ..web.pages import PageCache
from ..web.totals import Totals
from ..workspaces import repo as workspaces_repo
from ..workspaces.repo import Workspace
from . import repo
from .jobs import LAST_USED_FLUSH_SECONDS
from .repo import ApiKeyRecord

DEFAULT_SCOPES = ["read", "write"]
_MAX_CACHED = 50_000
# A cached record shows last_used_at as flushed when it was read: refresh it about as
# often as the usage flush runs, so the figure lags by at most two flush intervals.
RECORD_TTL_MS = int(LAST_USED_FLUSH_SECONDS * 1000)
MANAGER_ROLES = frozenset({"owner", "admin"})
MAX_GRACE_HOURS = 24 * 30


def grantable_tier(plans: Plans, principal: Principal, workspace_tier: str) -> str:
    """The highest tier a key may give anything it creates in a workspace (a key, a
    workspace's tier): its own tier, and never above the workspace's. A key cannot hand out
    a rate limit it does not hold itself."""
    if workspace_tier not in plans.tiers or plans.exceeds(workspace_tier, principal.tier):
        return principal.tier
    return workspace_tier


def present(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": list(record.scopes),
        "rate_limit_tier": record.rate_limit_tier or record.workspace_tier,
        "last_used_at": iso(record.last_used_at),
        "expires_at": iso(record.expires_at),
        "grace_period_ends_at": iso(record.grace_period_ends_at),
        "mcp_servers": None if record.mcp_servers is None else list(record.mcp_servers),
        "created_at": iso(record.created_at),
    }


def event_view(record: ApiKeyRecord) -> dict[str, Any]:
    """What an api_key.* event carries: never the key nor its hash."""
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": list(record.scopes),
        "user_id": record.user_id,
    }


def present_with_secret(record: ApiKeyRecord, key: str, *fields: str) -> dict[str, Any]:
    """The one-time view of a key (create, rotate): the full key beside chosen fields."""
    item = present(record)
    return {
        "id": item["id"],
        "name": item["name"],
        "key": key,
        "prefix": item["prefix"],
        **{name: item[name] for name in fields},
    }


class ApiKeyService:
    def __init__(
        self,
        db: Database,
        plans: Plans,
        clock: Clock,
        pepper: bytes,
        invalidator: Invalidator,
        events: Notifier | None = None,
        entitlements: EntitlementService | None = None,
    ) -> None:
        self.db, self.plans, self.clock, self.pepper = db, plans, clock, pepper
        self.invalidator = invalidator
        self.events = events or Notifier()
        self.entitlements = entitlements
        # key id -> (workspace id, record, read at ms), for GET /api-keys/{id}; evicted by
        # "key" and "workspace" targets (the record shows the workspace's tier).
        self._records: dict[int, tuple[int, ApiKeyRecord, int]] = {}
        self._records_in: dict[int, set[int]] = {}
        self.hits = self.misses = 0
        invalidator.subscribe("key", self._evict_key)
        invalidator.subscribe("workspace", self._evict_workspace)
        invalidator.subscribe_flush(self._clear)
        self.totals = Totals(invalidator, ("key_list", "workspace"))  # per workspace
        self.pages: PageCache[ApiKeyRecord] = PageCache(
            invalidator, ("key_list", "workspace"), "key", lambda k: k.id
        )

    def _evict_key(self, key_id: int) -> None:
        entry = self._records.pop(key_id, None)
        if entry is not None:
            self._records_in.get(entry[0], set()).discard(key_id)

    def _evict_workspace(self, workspace_id: int) -> None:
        for key_id in self._records_in.pop(workspace_id, ()):
            self._records.pop(key_id, None)

    def _clear(self) -> None:
        self._records.clear()
        self._records_in.clear()

    def forget_usage(self, key_ids: list[int]) -> None:
        """This process just wrote these keys' last_used_at: show it on the next GET."""
        for key_id in key_ids:
            self._evict_key(key_id)

    def cache_stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._records)}

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

    def validate_tier(self, tier: str | None, workspace_tier: str, ceiling: str) -> None:
        if tier is None:
            return
        if tier not in self.plans.tiers:
            options = ", ".join(self.plans.names())
            raise ValidationFailed.field(
                "rate_limit_tier",
                f"The selected rate_limit_tier is invalid. Valid tiers: {options}.",
            )
        if self.plans.exceeds(tier, ceiling):
            limit = (
                f"the workspace tier ({workspace_tier})"
                if ceiling == workspace_tier
                else f"the tier of the key making the request ({ceiling})"
            )
            raise ValidationFailed.field(
                "rate_limit_tier", f"The rate_limit_tier may not exceed {limit}."
            )

    async def create(
        self,
        tx: Executor,
        *,
        user_id: int,
        workspace_id: int,
        workspace_tier: str,
        name: str,
        key_scopes: list[str],
        tier: str | None,
        expires_at: int | None,
        rate_bucket_id: int | None = None,
        mcp_servers: tuple[str, ...] | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        key = _native.generate_key()
        created = await repo.create(
            tx,
            user_id=user_id,
            workspace_id=workspace_id,
            workspace_tier=workspace_tier,
            name=name,
            prefix=_native.key_prefix(key),
            key_hash=_native.hash_key(self.pepper, key).hex(),
            scopes=key_scopes,
            rate_limit_tier=tier,
            expires_at=expires_at,
            now=self.clock.now_ms(),
            rate_bucket_id=rate_bucket_id,
            mcp_servers=mcp_servers,
        )
        return created, key

    async def create_for(
        self,
        principal: Principal,
        workspace: Workspace,
        name: str,
        key_scopes: list[str] | None,
        tier: str | None,
        expires_at: int | None,
        mcp_servers: list[str] | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        key_scopes = DEFAULT_SCOPES if key_scopes is None else key_scopes
        self.validate_scopes(key_scopes, principal)
        ceiling = grantable_tier(self.plans, principal, workspace.tier)
        self.validate_tier(tier, workspace.tier, ceiling)
        if tier is None and ceiling != workspace.tier:
            # "Inherit the workspace tier" would be more than the caller holds: pin it.
            tier = ceiling
        if expires_at is not None and expires_at <= self.clock.now_ms():
            raise ValidationFailed.field(
                "expires_at", "The expires_at must be a date in the future."
            )
        # Read before the transaction: on SQLite a read inside it would wait for its lock.
        servers = await self._grantable_servers(principal, mcp_servers)
        counted = self.entitlements is not None and await self.entitlements.needs_count(
            "api_keys", workspace.id, workspace.tier
        )
        async with self.db.transaction() as tx:
            if counted:  # not on rotation: a successor replaces a key
                assert self.entitlements is not None
                await self.entitlements.enforce_count(tx, "api_keys", workspace.id)
            created, key = await self.create(
                tx,
                user_id=principal.user_id,
                workspace_id=workspace.id,
                workspace_tier=workspace.tier,
                name=name,
                key_scopes=key_scopes,
                tier=tier,
                expires_at=expires_at,
                mcp_servers=servers,
            )
            await self._publish(tx, "api_key.created", created, event_view(created))
        self.events.notify()
        await self.invalidator.changed(("key_list", workspace.id))
        return created, key

    async def _grantable_servers(
        self, principal: Principal, wanted: list[str] | None
    ) -> tuple[str, ...] | None:
        """The MCP servers a new key may use: what was asked, never more than the caller's
        own list (a restricted key cannot mint an unrestricted one); none asked means the
        caller's own restriction, or none."""
        own = (await self.get(principal.workspace_id, principal.key_id)).mcp_servers
        if wanted is None:
            return own
        if own is not None and not set(wanted) <= set(own):
            raise ValidationFailed.field(
                "mcp_servers",
                "A key can only be given MCP servers its creator may use: "
                + (", ".join(own) or "none"),
            )
        return tuple(sorted(set(wanted)))

    async def _publish(
        self, tx: Executor, event_type: str, record: ApiKeyRecord, view: dict[str, Any]
    ) -> None:
        await publish(
            tx,
            workspace_id=record.workspace_id,
            type=event_type,
            data={"api_key": view},
            now=self.clock.now_ms(),
        )

    async def get(self, workspace_id: int, key_id: int) -> ApiKeyRecord:
        now = self.clock.now_ms()
        cached = self._records.get(key_id)
        if cached is not None and cached[0] == workspace_id and now - cached[2] < RECORD_TTL_MS:
            self.hits += 1
            return cached[1]
        self.misses += 1
        mark = self.invalidator.mark()
        found = await repo.get(self.db, workspace_id, key_id)
        if found is None:
            raise NotFound()
        if self.invalidator.untouched(mark, ("key", key_id), ("workspace", workspace_id)):
            if len(self._records) >= _MAX_CACHED:
                self._clear()
            self._evict_key(key_id)
            self._records[key_id] = (workspace_id, found, now)
            self._records_in.setdefault(workspace_id, set()).add(key_id)
        return found

    async def list_page(
        self, workspace_id: int, query: ListQuery
    ) -> tuple[list[ApiKeyRecord], int]:
        now = self.clock.now_ms()
        page = await self.pages.load(
            workspace_id,
            query,
            now,
            lambda: repo.page_in_workspace(self.db, workspace_id, query, now),
            # last_used_at is flushed without an invalidation: re-read as often as a record.
            lambda rows: now + RECORD_TTL_MS,
        )
        total = await self.totals.of(
            "api_keys",
            workspace_id,
            query,
            len(page),
            lambda: repo.count_in_workspace(self.db, workspace_id, query, now),
        )
        return page, total

    def _effective_tier(self, target: ApiKeyRecord) -> str:
        tier = target.rate_limit_tier or target.workspace_tier
        return tier if tier in self.plans.tiers else self.plans.default_tier  # as auth

    def _check_may_rotate(self, principal: Principal, target: ApiKeyRecord) -> None:
        """The successor has the target's scopes, tier and user, and its secret goes to the
        caller: so only the caller itself, or a key of the same user that it covers."""
        if target.id == principal.key_id:
            return
        if target.user_id != principal.user_id:
            raise AccessDenied(
                message="Insufficient permissions. A key can only rotate keys of its own "
                "user; a workspace owner or admin may revoke other users' keys"
            )
        if not scopes.covers_all(principal.scopes, target.scopes) or self.plans.exceeds(
            self._effective_tier(target), principal.tier
        ):
            raise AccessDenied(
                message="Insufficient permissions. A key can only rotate itself or a key "
                "whose scopes and rate_limit_tier it holds itself"
            )

    def _check_may_revoke(
        self, principal: Principal, workspace: Workspace, target: ApiKeyRecord
    ) -> None:
        if target.id == principal.key_id:
            return
        if target.user_id != principal.user_id and workspace.role not in MANAGER_ROLES:
            raise AccessDenied(
                message="Insufficient permissions. Only the key's owner or a workspace "
                "owner or admin may revoke it"
            )
        if not scopes.covers_all(principal.scopes, target.scopes):
            raise AccessDenied(
                message="Insufficient permissions. A key can only revoke itself or a key "
                "whose scopes it holds itself"
            )

    async def rotate(
        self, principal: Principal, workspace: Workspace, key_id: int, grace_hours: int
    ) -> tuple[ApiKeyRecord, str, int]:
        old = await self.get(workspace.id, key_id)
        self._check_may_rotate(principal, old)
        now = self.clock.now_ms()
        if old.rotated_to_id is not None:
            raise ValidationFailed.field("id", "This key has already been rotated.")
        if old.expires_at is not None and old.expires_at <= now:
            raise ValidationFailed.field("id", "An expired key cannot be rotated.")
        grace_ends = now + grace_hours * 3_600_000
        async with self.db.transaction() as tx:
            new, key = await self.create(
                tx,
                user_id=old.user_id,
                workspace_id=old.workspace_id,
                workspace_tier=old.workspace_tier,
                name=old.name,
                key_scopes=list(old.scopes),
                tier=old.rate_limit_tier,
                expires_at=old.expires_at,
                # One budget across a rotation chain: rotating never refills the bucket.
                rate_bucket_id=old.rate_bucket_id or old.id,
                mcp_servers=old.mcp_servers,
            )
            if not await repo.mark_rotated(tx, key_id, new.id, grace_ends, now):
                # A concurrent rotation or revocation won: the successor is rolled back.
                raise ValidationFailed.field("id", "This key has already been rotated.")
            view = {**event_view(old), "rotated_to_id": new.id}
            view["grace_period_ends_at"] = iso(grace_ends)
            await self._publish(tx, "api_key.rotated", old, view)
        self.events.notify()
        await self.invalidator.changed(("key", key_id), ("key_list", workspace.id))
        return new, key, grace_ends

    async def revoke(self, principal: Principal, workspace: Workspace, key_id: int) -> None:
        target = await self.get(workspace.id, key_id)
        self._check_may_revoke(principal, workspace, target)
        async with self.db.transaction() as tx:
            if await repo.revoke(tx, key_id, self.clock.now_ms()):
                await self._publish(tx, "api_key.revoked", target, event_view(target))
        self.events.notify()
        await self.invalidator.changed(("key", key_id), ("key_list", workspace.id))

    async def includes(
        self, keys: list[ApiKeyRecord], names: list[str], workspace: Workspace
    ) -> dict[str, dict[int, Any]]:
        loaded: dict[str, dict[int, Any]] = {}
        if "workspace" in names:
            summary = {
                "id": workspace.id,
                "name": workspace.name,
                "slug": workspace.slug,
                "tier": workspace.tier,
            }
            loaded["workspace"] = {k.id: summary for k in keys}
        if "user" in names:
            users = await users_repo.get_many(self.db, sorted({k.user_id for k in keys}))
            loaded["user"] = {
                k.id: {"id": u.id, "name": u.name, "email": u.email}
                for k in keys
                if (u := users.get(k.user_id)) is not None
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
    from ..workspaces.service import DEFAULT_SETTINGS, slugify
    from ..workspaces.service import present as present_workspace

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
            owner_id=user.id,
            now=now,
        )
        record, key = await service.create(
            tx,
            user_id=user.id,
            workspace_id=workspace.id,
            workspace_tier=workspace.tier,
            name=f"{name} bootstrap key",
            key_scopes=["*"],
            tier=None,
            expires_at=None,
        )
    return {
        "user": {
            "id": user.id,
            "name": user.name,
            "email": user.email,
            "created_at": iso(user.created_at),
        },
        "workspace": present_workspace(workspace),
        "api_key": {**present(record), "key": key},
    }
