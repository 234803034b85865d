"""Authentication: bearer key -> :class:`Principal`, served from the Rust key cache.

A cache miss costs one indexed query by key hash. Cross-process freshness comes from the
host's invalidation log (invalidation.py): a change to a key (revoke, rotate) or to its
home workspace (tier, membership, deletion) evicts exactly the entries of that key or
workspace in every process, on its next request. A principal holds nothing about its user
beyond the id, so "user" targets leave it cached. A full flush clears the cache through the
generation passed to ``lookup`` (the invalidator's epoch).

During a rotation of the server secret (``CORE_API_SECRET_KEY_PREVIOUS`` set), a key
whose hash under the current secret is not in the database is looked up once more by its
hash under the previous secret; when found, its row is rewritten to the current hash (a
conditional update, so concurrent requests agree) and it authenticates. A cache hit is
unaffected; an unknown key costs one more hash and one more query.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .. import _native
from ..api_keys import repo as keys_repo
from ..clock import Clock
from ..plans import Plans
from ..storage import Database
from . import scopes
from .invalidation import Invalidator

log = logging.getLogger("core_api.auth")


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    user_id: int
    workspace_id: int
    scopes: frozenset[str]
    tier: str
    expires_at: int | None
    grace_ends_at: int | None
    bucket: bytes

    def usable_at(self, now_ms: int) -> bool:
        if self.expires_at is not None and now_ms >= self.expires_at:
            return False
        return self.grace_ends_at is None or now_ms < self.grace_ends_at

    def allows(self, required: str) -> bool:
        return scopes.grants(self.scopes, required)


class CacheMiss:
    """The key is well formed but not in this process's cache (yet); carries its hash so
    that :meth:`Authenticator.load` need not compute it again (and the key, for the
    previous secret's hash during a rotation)."""

    __slots__ = ("key_hash", "token")

    def __init__(self, key_hash: bytes, token: str) -> None:
        self.key_hash, self.token = key_hash, token


def bearer_token(header: str | None) -> str | None:
    if not header or len(header) > 256:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Authenticator:
    def __init__(
        self,
        db: Database,
        shared: _native.SharedState,
        cache: _native.KeyCache,
        plans: Plans,
        clock: Clock,
        invalidator: Invalidator,
        *,
        previous_pepper: bytes | None = None,
    ) -> None:
        self.db, self.shared, self.cache, self.plans, self.clock = db, shared, cache, plans, clock
        self.invalidator = invalidator
        # The previous server secret while it is being rotated out (None otherwise).
        self.previous_pepper = previous_pepper
        self.migrated = 0  # keys this process moved to the current secret's hash
        # Told the key ids whose last_used_at this process just wrote (caches of key records).
        self.usage_listeners: list[Callable[[list[int]], object]] = []
        invalidator.subscribe("key", cache.evict_key)
        invalidator.subscribe("workspace", cache.evict_workspace)

    def cached(self, token: str, generation: int) -> Principal | CacheMiss | None:
        """The answer from the key cache alone: a usable principal, None (refused), or
        a :class:`CacheMiss` when only :meth:`load` can tell. Synchronous, so the
        common request pays for no coroutine."""
        now = self.clock.now_ms()
        key_hash, principal = self.cache.lookup(token, generation, now)
        if not key_hash:
            return None
        if principal is None:
            return CacheMiss(key_hash, token)
        assert isinstance(principal, Principal)
        return principal if principal.usable_at(now) else None

    async def load(self, miss: CacheMiss, generation: int) -> Principal | None:
        """Resolve a cache miss with one indexed query; caches what it finds."""
        principal = await self._load(miss.key_hash, generation)
        if principal is None and self.previous_pepper is not None:
            principal = await self._load_previous(miss, generation)
        now = self.clock.now_ms()
        if principal is None or not principal.usable_at(now):
            return None
        self.cache.note_use(principal.key_id, now)  # hits mark their entry; a miss has none
        return principal

    async def _load_previous(self, miss: CacheMiss, generation: int) -> Principal | None:
        """The key's hash under the previous secret; when a live key has it, rewrite the
        row to the current hash (only if still the old one: a concurrent request may have
        done it first, then the current hash finds it) and load it by that."""
        assert self.previous_pepper is not None
        old_hash = _native.hash_key(self.previous_pepper, miss.token)
        key = await keys_repo.get_live_by_hash(self.db, old_hash.hex())
        if key is None or not _native.constant_time_eq(bytes.fromhex(key.key_hash), old_hash):
            return None
        if await keys_repo.rehash(self.db, key.id, old_hash.hex(), miss.key_hash.hex()):
            self.migrated += 1
            log.info("api key %d moved to the current secret key's hash", key.id)
        return await self._load(miss.key_hash, generation)

    async def _load(self, key_hash: bytes, generation: int) -> Principal | None:
        mark = self.invalidator.mark()
        key = await keys_repo.get_live_by_hash(self.db, key_hash.hex())
        if key is None or not _native.constant_time_eq(bytes.fromhex(key.key_hash), key_hash):
            return None
        tier = key.rate_limit_tier or key.workspace_tier
        if tier not in self.plans.tiers:
            tier = self.plans.default_tier
        principal = Principal(
            key_id=key.id,
            user_id=key.user_id,
            workspace_id=key.workspace_id,
            scopes=scopes.normalised_set(list(key.scopes)),
            tier=tier,
            expires_at=key.expires_at,
            grace_ends_at=key.grace_period_ends_at,
            bucket=b"key:%d" % (key.rate_bucket_id or key.id),
        )
        # Only cache what no change has touched since the read began: a change that
        # committed while we were reading must not be papered over by a stale insert.
        if self.invalidator.untouched(mark, ("key", key.id), ("workspace", key.workspace_id)):
            self.cache.insert(
                key_hash,
                principal.key_id,
                principal,
                generation,
                user_id=key.user_id,
                workspace_id=key.workspace_id,
            )
        return principal

    async def flush_last_used(self) -> int:
        uses = self.cache.drain_last_used()
        if uses:
            async with self.db.transaction() as tx:
                await keys_repo.record_last_used(tx, uses)
            for listener in self.usage_listeners:
                listener([key_id for key_id, _ in uses])
        return len(uses)
