"""Entitlements: what a workspace may use (its tier's plan plus operators' overrides),
how much it has used, and the atomic check-and-record.

- A limit is resolved per workspace and feature: the tier's allowance (plans.toml), or
  the newest live ``set`` override instead, plus every live ``grant``; -1 is unlimited.
- ``record`` is one conditional upsert on the period's counter row (repo.add_usage) and
  a ledger row, in one transaction: concurrent calls cannot overrun a hard limit, and an
  ``event_id`` already recorded in the period returns its first result and counts once.
- ``check`` is advisory and cheap: it answers from a per-process cache that this
  process's own writes keep exact and that re-reads what other processes wrote after
  ``CACHE_SECONDS``.
- Crossing 80 % and 100 % of a limit publishes ``entitlement.threshold_reached`` /
  ``entitlement.limit_reached`` once per period (an ``entitlement_notices`` row decides).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from ..clock import MAX_MS, Clock, iso
from ..errors import FeatureLimitReached, NotFound, ValidationFailed
from ..events import Notifier, publish
from ..gateway.invalidation import Invalidator
from ..plans import UNLIMITED, Feature, Plans
from ..storage.base import Database, Executor, IntegrityError
from ..workspaces.repo import Workspace
from . import repo
from .meter import Meter
from .periods import DAY_MS, bounds

CACHE_SECONDS = 1.0  # how stale a check's usage may be w.r.t. other processes' writes
LIMITS_CACHE_SECONDS = 60.0  # overrides changed where no invalidation reaches: seen within
CACHE_MAX = 100_000
LEDGER_DAYS = 35  # ledger rows of features without a period are kept this long
MAX_QUANTITY = 10**15
THRESHOLD, LIMIT = 80, 100
EVENT_TYPES = {THRESHOLD: "entitlement.threshold_reached", LIMIT: "entitlement.limit_reached"}


@dataclass(frozen=True, slots=True)
class Effective:
    feature: Feature
    limit: int  # -1 unlimited; a boolean is 1 (on) or 0 (off)
    hard: bool

    @property
    def unlimited(self) -> bool:
        return self.limit == UNLIMITED


# (valid until, monotonic s; overrides; (tier, feature) -> (valid until, epoch ms; limit))
Limits = tuple[float, list[repo.Override], dict[tuple[str, str], tuple[int, Effective]]]


class _Duplicate(Exception):
    """Raised inside the usage transaction to roll it back: the event_id was recorded."""


def label(feature: str) -> str:
    """``posts`` -> ``Post``, ``api_calls`` -> ``API call``: for the documented message."""
    words = feature.split("_")
    last = words[-1]
    if last.endswith("s") and not last.endswith("ss") and len(last) > 3:
        words[-1] = last[:-1]
    words = [w.upper() if w in {"api", "mcp", "url"} else w for w in words]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def combine(tier_limit: int, set_amount: int | None, granted: int, kind: str) -> int:
    """The one rule: the newest live ``set`` replaces the tier's limit, live grants add to
    it (nothing adds to unlimited); a boolean ends as 1 (on) or 0 (off)."""
    limit = tier_limit if set_amount is None else set_amount
    if limit != UNLIMITED:
        limit += granted
        if kind == "boolean":
            limit = 1 if limit > 0 else 0
    return limit


def percentage(used: int, limit: int) -> float | int:
    value = round(used * 100 / limit, 2) if limit > 0 else (0 if used == 0 else 100)
    return int(value) if float(value).is_integer() else value


class EntitlementService:
    def __init__(
        self, db: Database, plans: Plans, clock: Clock, upgrade_url: str, events: Notifier
    ) -> None:
        self.db, self.plans, self.clock, self.events = db, plans, clock, events
        self.upgrade_url = upgrade_url
        self.meter = Meter()
        # (workspace, feature, period_start) -> (valid until, monotonic s; used)
        self._usage: dict[tuple[int, str, int], tuple[float, int]] = {}
        # workspace -> (valid until, monotonic s; its overrides;
        #               (tier, feature) -> (valid until, epoch ms; the limit))
        self._limits: dict[int, Limits] = {}
        self._noticed: set[tuple[int, str, int, int]] = set()
        self._writes = 0  # this process's usage writes so far (see _used/_wrote)
        self.invalidator: Invalidator | None = None  # set by watch()

    # -- features and limits ------------------------------------------------------------

    def feature(self, name: str | None, field: str = "feature") -> Feature:
        found = self.plans.features.get(name or "")
        if found is None:
            valid = ", ".join(self.plans.features)
            raise ValidationFailed.field(
                field, f"The selected {field} is invalid. Valid features: {valid}."
            )
        return found

    def cached_limit(self, workspace_id: int, tier: str, feature: Feature) -> Effective | None:
        """:meth:`effective` from the cache alone (no coroutine for the common check)."""
        cached = self._limits.get(workspace_id)
        if cached is None or cached[0] <= time.monotonic():
            return None
        hit = cached[2].get((tier, feature.name))
        return hit[1] if hit is not None and self.clock.now_ms() < hit[0] else None

    async def effective(self, workspace_id: int, tier: str, feature: Feature) -> Effective:
        """The workspace's limit for a feature, cached per process until an override
        changes (the invalidator's ``workspace`` target, from any process or node), the
        next override expires, or LIMITS_CACHE_SECONDS pass (the bound when no shared
        memory or Redis links the process that changed it). Counts enforced inside a
        transaction read their overrides there instead (enforce_count)."""
        now = self.clock.now_ms()
        cached = self._limits.get(workspace_id)
        if cached is not None and cached[0] > time.monotonic():
            hit = cached[2].get((tier, feature.name))
            if hit is not None and now < hit[0]:
                return hit[1]
        else:
            overrides = await repo.overrides(self.db, workspace_id)
            if len(self._limits) >= CACHE_MAX:
                self._limits.clear()
            cached = (time.monotonic() + LIMITS_CACHE_SECONDS, overrides, {})
            self._limits[workspace_id] = cached
        allowance = (
            self.plans.allowance(tier, feature.name)
            if tier in self.plans.tiers
            else self.plans.allowance(self.plans.default_tier, feature.name)
        )
        live = [
            o
            for o in cached[1]
            if o.feature == feature.name and (o.expires_at is None or o.expires_at > now)
        ]
        sets = [o.amount for o in live if o.kind == "set"]
        granted = sum(o.amount for o in live if o.kind == "grant")
        limit = combine(allowance.limit, sets[-1] if sets else None, granted, feature.kind)
        found = Effective(feature, limit, allowance.hard)
        ends = min((o.expires_at for o in live if o.expires_at is not None), default=MAX_MS)
        cached[2][tier, feature.name] = (ends, found)
        return found

    # -- usage --------------------------------------------------------------------------

    async def _used(self, workspace: Workspace, feature: Feature, period_start: int) -> int:
        key = (workspace.id, feature.name, period_start)
        now = time.monotonic()
        hit = self._usage.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        mark = self._writes
        if feature.name in repo.COUNTED:
            subject = workspace.owner_id if feature.name == "workspaces" else workspace.id
            used = await repo.count(self.db, feature.name, subject, self.clock.now_ms())
        else:
            used = await repo.used(self.db, workspace.id, feature.name, period_start)
        if self._writes == mark:  # no write of this process overlapped the read
            if len(self._usage) >= CACHE_MAX:
                self._usage.clear()
            self._usage[key] = (now + CACHE_SECONDS, used)
        return used

    def _wrote(self, key: tuple[int, str, int]) -> None:
        """This process changed a count: drop it (writes finish out of order, so their
        results cannot be cached) and refuse reads that overlapped the write."""
        self._writes += 1
        self._usage.pop(key, None)

    def forget(self, workspace_id: int | None = None) -> None:
        """Drop cached limits (one workspace's: the invalidator's ``workspace`` target), or
        everything (a full flush)."""
        if workspace_id is None:
            self._usage.clear()
            self._limits.clear()
        else:
            self._limits.pop(workspace_id, None)

    def watch(self, invalidator: Invalidator) -> None:
        """Follow override changes made by any process or node (``core-api entitlements``
        emits the workspace as changed)."""
        self.invalidator = invalidator
        invalidator.subscribe("workspace", self.forget)
        invalidator.subscribe_flush(self.forget)

    def check_now(self, workspace: Workspace, name: str, quantity: int) -> dict[str, Any] | None:
        """:meth:`check` answered from the caches alone (no coroutine for the common
        check), None when the limit or the usage must be read first."""
        feature = self.feature(name)
        eff = self.cached_limit(workspace.id, workspace.tier, feature)
        if eff is None:
            return None
        if feature.kind == "boolean":
            return self._switch_body(name, eff)
        period_start, reset_at = bounds(feature.period, self.clock.now_ms())
        hit = self._usage.get((workspace.id, name, period_start))
        if hit is None or hit[0] <= time.monotonic():
            return None
        return self._check_body(name, eff, hit[1], quantity, reset_at)

    async def check(self, workspace: Workspace, name: str, quantity: int) -> dict[str, Any]:
        """The documented check body (allowed, or LIMIT_EXCEEDED with upgrade_url)."""
        known = self.check_now(workspace, name, quantity)
        if known is not None:
            return known
        feature = self.feature(name)
        eff = self.cached_limit(workspace.id, workspace.tier, feature) or await self.effective(
            workspace.id, workspace.tier, feature
        )
        if feature.kind == "boolean":
            return self._switch_body(name, eff)
        period_start, reset_at = bounds(feature.period, self.clock.now_ms())
        used = await self._used(workspace, feature, period_start)
        return self._check_body(name, eff, used, quantity, reset_at)

    def _switch_body(self, name: str, eff: Effective) -> dict[str, Any]:
        if eff.limit != 0:
            return {"allowed": True, "feature": name, "enabled": True}
        return {
            "allowed": False,
            "feature": name,
            "reason": "NOT_INCLUDED",
            "message": f"{label(name)} is not included in your plan.",
            "enabled": False,
            "upgrade_url": self.upgrade_url,
        }

    def _check_body(
        self, name: str, eff: Effective, used: int, quantity: int, reset_at: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"allowed": True, "feature": name, "current_usage": used}
        if eff.unlimited:
            body |= {"limit": None, "available": None}
        else:
            body |= {"limit": eff.limit, "available": max(eff.limit - used, 0)}
            over = used + quantity - eff.limit
            if over > 0 and eff.hard:
                body = {
                    "allowed": False,
                    "feature": name,
                    "reason": "LIMIT_EXCEEDED",
                    "message": (f"{label(name)} limit exceeded. Used: {used}, Limit: {eff.limit}"),
                    "current_usage": used,
                    "limit": eff.limit,
                    "available": max(eff.limit - used, 0),
                    "upgrade_url": self.upgrade_url,
                }
            elif over > 0:
                body["overage"] = over  # a soft limit: allowed, the overage reported
        if reset_at is not None:
            body["reset_at"] = iso(reset_at)
        return body

    async def take_one(self, workspace: Workspace, name: str) -> bool:
        """One unit of a feature core-api meters itself (``mcp_calls``), before the work it
        pays for. A hard, finite limit is enforced as ``POST /entitlements/usage`` enforces
        it: one atomic check-and-record, FeatureLimitReached beyond the limit (exact across
        processes and nodes); True when recorded here. False for a soft or unlimited
        feature (the default plans): the caller counts it in memory afterwards, with no
        write per unit."""
        feature = self.plans.features.get(name)
        if feature is None or feature.kind != "metered":
            return False
        eff = self.cached_limit(workspace.id, workspace.tier, feature) or await self.effective(
            workspace.id, workspace.tier, feature
        )
        if not eff.hard or eff.unlimited:
            return False
        await self.record(workspace, name, 1, None, None)
        return True

    def recordable(self, feature: Feature) -> None:
        if feature.kind == "boolean":
            raise ValidationFailed.field(
                "feature", f"The feature {feature.name} is on or off; it has no usage."
            )
        if feature.name in repo.COUNTED:
            raise ValidationFailed.field(
                "feature",
                f"The feature {feature.name} is counted by core-api; it cannot be recorded.",
            )

    async def record(
        self,
        workspace: Workspace,
        name: str,
        quantity: int,
        metadata: dict[str, Any] | None,
        event_id: str | None,
    ) -> tuple[dict[str, Any], bool]:
        """Check and record in one atomic step; ``(body, duplicate)``. A hard limit that
        the quantity would exceed raises FeatureLimitReached and records nothing."""
        feature = self.feature(name)
        self.recordable(feature)
        if quantity == 0 or (quantity < 0 and feature.kind == "metered"):
            low = "1" if feature.kind == "metered" else "a non-zero integer"
            raise ValidationFailed.field("quantity", f"The quantity must be at least {low}.")
        now = self.clock.now_ms()
        period_start, reset_at = bounds(feature.period, now)
        eff = await self.effective(workspace.id, workspace.tier, feature)
        ceiling = eff.limit if eff.hard and not eff.unlimited else repo.NO_LIMIT
        expires = reset_at if reset_at is not None else now + LEDGER_DAYS * DAY_MS
        entry = repo.Entry(
            workspace_id=workspace.id,
            feature=name,
            period_start=period_start,
            event_id=event_id,
            quantity=quantity,
            limit_value=eff.limit,
            ceiling=ceiling,
            metadata=orjson.dumps(metadata or {}).decode(),
            expires_at=expires,
            now=now,
        )
        try:
            return await self._record(workspace, feature, eff, entry, reset_at)
        except IntegrityError:  # the workspace was deleted while this request ran
            raise NotFound() from None

    async def _record(
        self,
        workspace: Workspace,
        feature: Feature,
        eff: Effective,
        entry: repo.Entry,
        reset_at: int | None,
    ) -> tuple[dict[str, Any], bool]:
        name, quantity, event_id = feature.name, entry.quantity, entry.event_id
        period_start, now, ceiling = entry.period_start, entry.now, entry.ceiling
        published = False
        try:
            if event_id is None and self.db.dialect == "postgresql":
                # Nothing to deduplicate: one statement, one round trip, no transaction.
                used, _ = await repo.record_at_once(self.db, entry)
                if used is not None and self._crossed(eff, used - quantity, used):
                    async with self.db.transaction() as tx:
                        published = await self._notices(
                            tx,
                            workspace.id,
                            eff,
                            period_start,
                            reset_at,
                            used - quantity,
                            used,
                            now,
                        )
            else:
                async with self.db.transaction() as tx:
                    if self.db.dialect == "postgresql":
                        used, written = await repo.record_at_once(tx, entry)
                    else:
                        used = await repo.add_usage(
                            tx, workspace.id, name, period_start, quantity, ceiling, now
                        )
                        written = used is not None and await repo.insert_event(tx, entry, used)
                    if used is not None:
                        if not written:
                            raise _Duplicate()  # rolls the counter back
                        published = await self._notices(
                            tx,
                            workspace.id,
                            eff,
                            period_start,
                            reset_at,
                            used - quantity,
                            used,
                            now,
                        )
        except _Duplicate:
            first = await repo.find_event(self.db, workspace.id, name, period_start, event_id or "")
            if first is None:  # purged meanwhile: cannot happen within the period
                raise
            return self._recorded(name, first.used_after, first.limit_value), True
        if published:
            self.events.notify()
        if used is None:
            if event_id is not None:  # a retry of an event recorded when there was room
                first = await repo.find_event(self.db, workspace.id, name, period_start, event_id)
                if first is not None:
                    return self._recorded(name, first.used_after, first.limit_value), True
            await self._refused(workspace.id, eff, period_start, reset_at, now)
            raise FeatureLimitReached(name, self.upgrade_url)
        self._wrote((workspace.id, name, period_start))
        return self._recorded(name, used, eff.limit), False

    @staticmethod
    def _recorded(name: str, used: int, limit: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "recorded": True,
            "feature": name,
            "current_usage": used,
            "limit": None if limit == UNLIMITED else limit,
        }
        if limit != UNLIMITED and used > limit:
            body["overage"] = used - limit  # a soft limit: recorded, the overage reported
        return body

    # -- notices ------------------------------------------------------------------------

    async def _notices(
        self,
        tx: Executor,
        workspace_id: int,
        eff: Effective,
        period_start: int,
        reset_at: int | None,
        before: int,
        after: int,
        now: int,
    ) -> bool:
        """Publish the levels this change crossed (once per period); True if any was."""
        published = False
        for level in self._crossed(eff, before, after):
            published |= await self._notice(
                tx, workspace_id, eff, period_start, reset_at, level, after, now
            )
        return published

    @staticmethod
    def _crossed(eff: Effective, before: int, after: int) -> list[int]:
        """The levels (80, 100) a change from ``before`` to ``after`` crossed."""
        if eff.unlimited or eff.limit <= 0 or after <= before:
            return []
        # In integers: used * 100 >= limit * level.
        return [lv for lv in (THRESHOLD, LIMIT) if before * 100 < eff.limit * lv <= after * 100]

    async def _notice(
        self,
        tx: Executor,
        workspace_id: int,
        eff: Effective,
        period_start: int,
        reset_at: int | None,
        level: int,
        used: int,
        now: int,
    ) -> bool:
        # Features without a period notify once per calendar month.
        notice_period = period_start if eff.feature.period else bounds("month", now)[0]
        key = (workspace_id, eff.feature.name, notice_period, level)
        if key in self._noticed:
            return False
        if not await repo.add_notice(tx, workspace_id, eff.feature.name, notice_period, level, now):
            self._noticed.add(key)
            return False
        if len(self._noticed) >= CACHE_MAX:
            self._noticed.clear()
        self._noticed.add(key)
        await publish(
            tx,
            workspace_id=workspace_id,
            type=EVENT_TYPES[level],
            data={
                "feature": eff.feature.name,
                "threshold": level,
                "used": used,
                "limit": eff.limit,
                "enforcement": "hard" if eff.hard else "soft",
                "period_start": iso(period_start) if eff.feature.period else None,
                "reset_at": iso(reset_at),
            },
            now=now,
        )
        return True

    async def _refused(
        self, workspace_id: int, eff: Effective, period_start: int, reset_at: int | None, now: int
    ) -> None:
        """A hard refusal means the limit is reached: say so once per period."""
        try:
            async with self.db.transaction() as tx:
                used = await repo.used(tx, workspace_id, eff.feature.name, period_start)
                sent = await self._notice(
                    tx, workspace_id, eff, period_start, reset_at, LIMIT, used, now
                )
        except IntegrityError:  # the workspace was deleted meanwhile
            return
        if sent:
            self.events.notify()

    # -- counts of core-api's own resources ----------------------------------------------

    async def needs_count(self, feature: str, workspace_id: int, tier: str) -> bool:
        """False when the feature is unlimited for the workspace (its tier and its cached
        overrides): the creation then skips ``enforce_count`` and its lock and count, since
        there is nothing to serialise against. Call it before the transaction (it may read
        the overrides). A tier change or a new override applies to creations that start
        after the invalidation reaches this process (the next request on the host, within
        a second on other nodes through Redis)."""
        definition = self.plans.features.get(feature) or Feature(feature, "limit")
        return not (await self.effective(workspace_id, tier, definition)).unlimited

    async def enforce_count(
        self, tx: Executor, feature: str, workspace_id: int, *, user_id: int | None = None
    ) -> None:
        """Call inside the transaction that creates one more ``feature`` thing, before the
        insert: ``workspaces`` (``workspace_id`` = the acting workspace, whose tier and
        overrides apply; ``user_id`` = the new owner), ``api_keys``, ``webhooks``,
        ``pixel_sites``. Serialises concurrent creations (row lock on PostgreSQL), raises
        FeatureLimitReached at a hard limit, and publishes threshold events in ``tx``
        (call ``runtime.events.notify()`` after the commit)."""
        dialect = self.db.dialect
        if feature == "workspaces":  # counted per owner: the owner's row is the lock
            found = await repo.workspace_row(tx, workspace_id)
            if found is None:
                raise NotFound()
            subject = int(found["owner_id"]) if user_id is None else user_id
            await repo.lock_user(tx, subject, dialect)
        else:
            found = await repo.lock_workspace(tx, workspace_id, dialect)
            if found is None:
                raise NotFound()
            subject = workspace_id
        definition = self.plans.features.get(feature) or Feature(feature, "limit")
        tier = str(found["tier"])
        now = self.clock.now_ms()
        counted = await repo.count_with_overrides(tx, feature, subject, workspace_id, now)
        allowance = self.plans.allowance(
            tier if tier in self.plans.tiers else self.plans.default_tier, feature
        )
        eff = Effective(
            definition,
            combine(allowance.limit, counted.set_amount, counted.granted, definition.kind),
            allowance.hard,
        )
        if eff.unlimited:
            return
        if counted.n + 1 > eff.limit and eff.hard:
            raise FeatureLimitReached(feature, self.upgrade_url)
        self._wrote((workspace_id, feature, 0))
        await self._notices(tx, workspace_id, eff, 0, None, counted.n, counted.n + 1, now)

    # -- summary ------------------------------------------------------------------------

    async def summary(self, workspace: Workspace) -> dict[str, Any]:
        now = self.clock.now_ms()
        rows = await repo.usage_rows(self.db, workspace.id)
        items: dict[str, Any] = {}
        for name, feature in self.plans.features.items():
            eff = await self.effective(workspace.id, workspace.tier, feature)
            if feature.kind == "boolean":
                items[name] = {"enabled": eff.limit != 0}
                continue
            period_start, reset_at = bounds(feature.period, now)
            if name in repo.COUNTED:
                subject = workspace.owner_id if name == "workspaces" else workspace.id
                used = await repo.count(self.db, name, subject, now)
            else:
                used = rows.get((name, period_start), 0)
            item: dict[str, Any] = {"used": used}
            if eff.unlimited:
                item |= {"limit": None, "available": None, "percentage": None}
            else:
                item |= {
                    "limit": eff.limit,
                    "available": max(eff.limit - used, 0),
                    "percentage": percentage(used, eff.limit),
                }
                if used > eff.limit:
                    item["overage"] = used - eff.limit
            if reset_at is not None:
                item["reset_at"] = iso(reset_at)
            if feature.unit:
                item["unit"] = feature.unit
            items[name] = item
        return {"workspace_id": workspace.id, "tier": workspace.tier, "entitlements": items}

    # -- metering (api_calls and other per-process counts) -------------------------------

    async def flush(self) -> int:
        """Write this process's metered counts (one transaction); on failure they are
        kept for the next flush, so an outage loses nothing."""
        counts = self.meter.drain()
        if not counts:
            return 0
        units = sum(counts.values())
        self.meter.in_flight += units  # still pending (metrics) until the commit
        try:
            return await self._flush(counts)
        except BaseException:
            self.meter.restore(counts)
            raise
        finally:
            self.meter.in_flight -= units

    async def _flush(self, counts: dict[tuple[int, str], int]) -> int:
        now = self.clock.now_ms()
        tiers = await repo.workspace_tiers(self.db, sorted({ws for ws, _ in counts}))
        rows = []
        for (workspace_id, name), n in counts.items():
            if workspace_id not in tiers:
                continue  # deleted since: its usage went with it
            feature = self.plans.features.get(name) or Feature(name, "metered", "month")
            rows.append((workspace_id, name, bounds(feature.period, now)[0], n))
        if not rows:
            return 0
        limits = {}
        for workspace_id, name, _, _ in rows:
            feature = self.plans.features.get(name) or Feature(name, "metered", "month")
            limits[workspace_id, name] = await self.effective(
                workspace_id, tiers[workspace_id], feature
            )
        published = False
        async with self.db.transaction() as tx:
            totals = await repo.add_counts(tx, rows, now)
            for workspace_id, name, n, used in totals:
                eff = limits[workspace_id, name]
                period_start, reset_at = bounds(eff.feature.period, now)
                published |= await self._notices(
                    tx, workspace_id, eff, period_start, reset_at, used - n, used, now
                )
        for workspace_id, name, _, _total in totals:
            period_start = bounds(limits[workspace_id, name].feature.period, now)[0]
            self._wrote((workspace_id, name, period_start))
        if published:
            self.events.notify()
        return sum(n for _, _, _, n in rows)

    async def purge(self, batch: int = 5_000) -> int:
        return await repo.purge_events(self.db, self.clock.now_ms(), batch)

    # -- operators (core-api entitlements ...) -------------------------------------------

    async def _operator_workspace(self, workspace_id: int) -> dict[str, Any]:
        found = await repo.workspace_row(self.db, workspace_id)
        if found is None:
            raise ValidationFailed.field("workspace", f"No workspace has the id {workspace_id}.")
        return found

    async def add_override(
        self,
        workspace_id: int,
        name: str,
        kind: str,
        amount: int,
        expires_at: int | None,
        note: str = "",
    ) -> repo.Override:
        """``set``: the limit becomes ``amount`` (-1 unlimited; a boolean 0 or 1);
        ``grant``: ``amount`` more (> 0) on top. Either may expire."""
        feature = self.feature(name)
        await self._operator_workspace(workspace_id)
        now = self.clock.now_ms()
        if kind == "grant" and amount <= 0:
            raise ValidationFailed.field("amount", "A grant adds a positive amount.")
        if kind == "set" and (amount < UNLIMITED or (feature.kind == "boolean" and amount > 1)):
            valid = "0 or 1" if feature.kind == "boolean" else "a count >= 0, or -1 (unlimited)"
            raise ValidationFailed.field("limit", f"The limit must be {valid}.")
        if expires_at is not None and expires_at <= now:
            raise ValidationFailed.field("expires", "The expiry must be in the future.")
        async with self.db.transaction() as tx:
            created = await repo.add_override(
                tx,
                workspace_id=workspace_id,
                feature=name,
                kind=kind,
                amount=amount,
                expires_at=expires_at,
                note=note,
                now=now,
            )
        await self._changed(workspace_id)
        return created

    async def clear_overrides(self, workspace_id: int, name: str) -> int:
        self.feature(name)
        removed = await repo.delete_overrides(self.db, workspace_id, name)
        await self._changed(workspace_id)
        return removed

    async def _changed(self, workspace_id: int) -> None:
        self.forget(workspace_id)
        if self.invalidator is not None:  # every process on this host, and (Redis) others
            await self.invalidator.changed(("workspace", workspace_id))

    async def show(self, workspace_id: int) -> dict[str, Any]:
        found = await self._operator_workspace(workspace_id)
        workspace = Workspace(
            id=workspace_id,
            name="",
            slug="",
            tier=str(found["tier"]),
            settings="{}",
            owner_id=int(found["owner_id"]),
            created_at=0,
            updated_at=0,
            role="owner",
        )
        self.forget(workspace_id)
        now = self.clock.now_ms()
        return {
            **await self.summary(workspace),
            "overrides": [
                {
                    "id": o.id,
                    "feature": o.feature,
                    "kind": o.kind,
                    "amount": o.amount,
                    "expires_at": iso(o.expires_at),
                    "expired": o.expires_at is not None and o.expires_at <= now,
                    "note": o.note,
                    "created_at": iso(o.created_at),
                }
                for o in await repo.overrides(self.db, workspace_id)
            ],
        }
