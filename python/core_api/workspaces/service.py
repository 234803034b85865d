"""Workspaces: create, read, update, delete, with membership-scoped access."""

from __future__ import annotations

import re
import secrets
import unicodedata
from typing import TYPE_CHECKING, Any

import orjson

from ..clock import Clock, iso
from ..errors import AccessDenied, NotFound, ValidationFailed
from ..events import Notifier, publish

if TYPE_CHECKING:
    from ..entitlements.service import EntitlementService
from ..gateway.invalidation import Invalidator
from ..plans import Plans
from ..storage import Database, IntegrityError
from ..users import repo as users_repo
from ..users.repo import User
from ..web.bodies import settings_problem
from ..web.listing import ListQuery
from ..web.pages import PageCache
from ..web.totals import Totals
from . import repo
from .repo import Workspace

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
DEFAULT_SETTINGS = {"timezone": "UTC", "locale": "en_GB"}
DEFAULT_SETTINGS_JSON = orjson.dumps(DEFAULT_SETTINGS).decode()
WRITE_ROLES = frozenset({"owner", "admin"})
_MAX_CACHED = 50_000
_MISSING: Any = object()


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:200]
    return slug or "workspace"


def present(workspace: Workspace, *, settings: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": workspace.id,
        "name": workspace.name,
        "slug": workspace.slug,
        "tier": workspace.tier,
    }
    if settings:
        item["settings"] = orjson.loads(workspace.settings)
    item["created_at"] = iso(workspace.created_at)
    item["updated_at"] = iso(workspace.updated_at)
    return item


class WorkspaceService:
    def __init__(
        self,
        db: Database,
        plans: Plans,
        clock: Clock,
        invalidator: Invalidator,
        events: Notifier | None = None,
        entitlements: EntitlementService | None = None,
    ) -> None:
        self.db, self.plans, self.clock, self.invalidator = db, plans, clock, invalidator
        self.events = events or Notifier()
        self.entitlements = entitlements
        # (user_id, workspace_id) -> the workspace with the user's role, or None for "not a
        # member"; indexed by user and by workspace so that a change evicts only its entries.
        self._access: dict[tuple[int, int], Workspace | None] = {}
        self._by_user: dict[int, set[int]] = {}
        self._by_workspace: dict[int, set[int]] = {}
        self.hits = self.misses = 0
        invalidator.subscribe("user", self._evict_user)
        invalidator.subscribe("workspace", self._evict_workspace)
        invalidator.subscribe_flush(self._clear)
        self.totals = Totals(invalidator, ("workspace_list", "user"))  # per user
        self.pages: PageCache[Workspace] = PageCache(
            invalidator, ("workspace_list", "user"), "workspace", lambda w: w.id
        )

    def _evict_user(self, user_id: int) -> None:
        for workspace_id in self._by_user.pop(user_id, ()):
            self._access.pop((user_id, workspace_id), None)
            self._by_workspace.get(workspace_id, set()).discard(user_id)

    def _evict_workspace(self, workspace_id: int) -> None:
        for user_id in self._by_workspace.pop(workspace_id, ()):
            self._access.pop((user_id, workspace_id), None)
            self._by_user.get(user_id, set()).discard(workspace_id)

    def _clear(self) -> None:
        self._access.clear()
        self._by_user.clear()
        self._by_workspace.clear()

    def _remember(self, user_id: int, workspace_id: int, found: Workspace | None) -> None:
        if len(self._access) >= _MAX_CACHED:
            self._clear()
        self._access[(user_id, workspace_id)] = found
        self._by_user.setdefault(user_id, set()).add(workspace_id)
        self._by_workspace.setdefault(workspace_id, set()).add(user_id)

    def cache_stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._access)}

    async def find(self, user_id: int, workspace_id: int) -> Workspace | None:
        """The workspace with the user's role, or None unless the user is a member."""
        cache_key = (user_id, workspace_id)
        if cache_key in self._access:
            self.hits += 1
            return self._access[cache_key]
        self.misses += 1
        mark = self.invalidator.mark()
        found = await repo.get_for_user(self.db, user_id, workspace_id)
        if self.invalidator.untouched(mark, ("user", user_id), ("workspace", workspace_id)):
            self._remember(user_id, workspace_id, found)
        return found

    def known(self, user_id: int, workspace_id: int) -> Workspace | None:
        """The workspace when the cache holds the user as a member (no coroutine), else
        None: :meth:`get` or :meth:`find` then decide."""
        found = self._access.get((user_id, workspace_id))
        if found is not None:
            self.hits += 1
        return found

    async def get(self, user_id: int, workspace_id: int) -> Workspace:
        cached = self._access.get((user_id, workspace_id), _MISSING)  # hot path: no await
        if cached is _MISSING:
            found: Workspace | None = await self.find(user_id, workspace_id)
        else:
            self.hits += 1
            found = cached
        if found is None:
            raise NotFound()
        return found

    async def list_page(self, user_id: int, query: ListQuery) -> tuple[list[Workspace], int]:
        page = await self.pages.load(
            user_id,
            query,
            self.clock.now_ms(),
            lambda: repo.page_for_user(self.db, user_id, query),
        )
        total = await self.totals.of(
            "workspaces",
            user_id,
            query,
            len(page),
            lambda: repo.count_for_user(self.db, user_id, query),
        )
        return page, total

    async def create(
        self,
        user_id: int,
        ceiling_tier: str,
        name: str,
        slug: str | None,
        tier: str | None,
        acting: Workspace,
    ) -> Workspace:
        """The workspace, its owner's membership and a ``workspace.created`` event, in one
        transaction. The event goes to the workspace the request acted in (the key's home
        or ``X-Workspace-ID``): the new one has no webhook endpoints yet."""
        tier = tier or self.plans.default_tier
        self.check_tier(tier, ceiling_tier)
        now = self.clock.now_ms()
        acting_workspace_id = acting.id
        # The acting workspace's tier and overrides apply; nothing to count when unlimited.
        counted = self.entitlements is not None and await self.entitlements.needs_count(
            "workspaces", acting.id, acting.tier
        )
        for attempt in range(5):
            try:
                picked = await self._pick_slug(slug, name, attempt)
                async with self.db.transaction() as tx:
                    if counted:
                        assert self.entitlements is not None
                        await self.entitlements.enforce_count(
                            tx, "workspaces", acting_workspace_id, user_id=user_id
                        )
                    created = await repo.create_owned(
                        tx,
                        self.db.dialect,
                        name=name,
                        slug=picked,
                        tier=tier,
                        settings=DEFAULT_SETTINGS_JSON,
                        owner_id=user_id,
                        now=now,
                    )
                    await publish(
                        tx,
                        workspace_id=acting_workspace_id,
                        type="workspace.created",
                        data={"workspace": present(created, settings=False)},
                        now=now,
                    )
                self.events.notify()
                # Access caches may remember "not a member" for this (user, new id) pair;
                # the owner's list of workspaces grew.
                await self.invalidator.changed(
                    ("workspace_list", user_id), ("workspace", created.id)
                )
                return created
            except IntegrityError:
                if slug is not None:
                    raise ValidationFailed.field(
                        "slug", "The slug has already been taken."
                    ) from None
                # The generated slug was taken (or just lost a race): nothing was written;
                # pick again.
        raise ValidationFailed.field(
            "slug", "Could not allocate a unique slug; please provide one."
        )

    async def _pick_slug(self, slug: str | None, name: str, attempt: int) -> str:
        """The first attempt inserts the given or generated slug without looking: when it
        is free (the usual case) a create is one statement; the unique index judges."""
        if slug is not None:
            return slug
        base = slugify(name)
        if attempt == 0:
            return base
        if attempt > 1:
            # Everyone who lost the race would pick the same next number and collide again
            # (PostgreSQL does not serialise these transactions): a random suffix cannot.
            return f"{base}-{secrets.token_hex(4)}"
        taken = await repo.slugs_like(self.db, base)
        if base not in taken:
            return base
        suffix = 2
        while f"{base}-{suffix}" in taken:
            suffix += 1
        return f"{base}-{suffix}"

    def check_tier(self, tier: str, ceiling_tier: str) -> None:
        if tier not in self.plans.tiers:
            options = ", ".join(self.plans.names())
            raise ValidationFailed.field(
                "tier", f"The selected tier is invalid. Valid tiers: {options}."
            )
        if self.plans.exceeds(tier, ceiling_tier):
            raise ValidationFailed.field(
                "tier",
                f"The tier may not exceed {ceiling_tier}, the lower of your key's tier "
                "and its workspace's.",
            )

    async def update(
        self,
        user_id: int,
        workspace_id: int,
        ceiling_tier: str,
        name: str | None,
        tier: str | None,
        settings: dict[str, Any] | None,
    ) -> Workspace:
        current = await self.get(user_id, workspace_id)
        if current.role not in WRITE_ROLES:
            raise AccessDenied(
                message="Insufficient permissions. Requires workspace role: owner or admin"
            )
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if tier is not None:
            if tier != current.tier:
                self.check_tier(tier, ceiling_tier)
            changes["tier"] = tier
        if settings is not None:
            merged = {**orjson.loads(current.settings), **settings}
            merged = {k: v for k, v in merged.items() if v is not None}
            # The limits hold for what is stored, not only for each PATCH's own part.
            if problem := settings_problem(merged):
                raise ValidationFailed.field("settings", f"The merged settings {problem}.")
            changes["settings"] = orjson.dumps(merged).decode()
        if not changes:
            return current
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await repo.update(tx, workspace_id, changes, now)
            updated = await repo.get_for_user(tx, user_id, workspace_id)
            assert updated is not None
            await publish(
                tx,
                workspace_id=workspace_id,
                type="workspace.updated",
                data={"workspace": present(updated, settings=False), "changed": sorted(changes)},
                now=now,
            )
        self.events.notify()
        await self.invalidator.changed(("workspace", workspace_id))
        return updated

    async def delete(self, user_id: int, workspace_id: int) -> None:
        current = await self.get(user_id, workspace_id)
        if current.role != "owner":
            raise AccessDenied(message="Insufficient permissions. Requires workspace role: owner")
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            members = (await repo.members_of(tx, [workspace_id])).get(workspace_id, [])
            await repo.delete(tx, workspace_id)
            # Delivered to the deleted workspace's own endpoints (they outlive it until
            # the retention job removes them, see docs/webhooks.md).
            await publish(
                tx,
                workspace_id=workspace_id,
                type="workspace.deleted",
                data={"workspace": {"id": workspace_id, "name": current.name}},
                now=now,
            )
        self.events.notify()
        await self.invalidator.changed(
            ("workspace", workspace_id), *(("workspace_list", m.user_id) for m in members)
        )

    async def includes(
        self, workspaces: list[Workspace], names: list[str]
    ) -> dict[str, dict[int, Any]]:
        """Eager-load includes for a page in one query each (no N+1)."""
        loaded: dict[str, dict[int, Any]] = {}
        if "owner" in names:
            owners = await users_repo.get_many(self.db, sorted({w.owner_id for w in workspaces}))
            loaded["owner"] = {w.id: _user(owners.get(w.owner_id)) for w in workspaces}
        if "members" in names:
            members = await repo.members_of(self.db, [w.id for w in workspaces])
            loaded["members"] = {
                w.id: [
                    {
                        "user_id": m.user_id,
                        "name": m.name,
                        "email": m.email,
                        "role": m.role,
                        "joined_at": iso(m.created_at),
                    }
                    for m in members.get(w.id, [])
                ]
                for w in workspaces
            }
        return loaded


def _user(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "created_at": iso(user.created_at),
    }
