"""Webhook endpoints: the rules behind the eight documented endpoints, secret rotation and
the synchronous test send. No HTTP parsing and no SQL here."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..clock import Clock, iso
from ..config import Settings
from ..errors import ApiError, FeatureLimitReached, NotFound, ValidationFailed
from ..events.patterns import pattern_problem
from ..events.service import Notifier, envelope, new_event_id
from ..plans import Plans
from ..storage import Database
from ..web.listing import ListQuery
from ..workspaces.repo import Workspace
from . import repo, signing
from .repo import Attempt, Delivery, Endpoint
from .secrets import SecretBox
from .transport import Transport, resolve_problem

if TYPE_CHECKING:
    from ..entitlements.service import EntitlementService

MAX_MANUAL_RETRIES = 5  # per delivery; "max retries reached" past it
MAX_GRACE_HOURS = 24 * 7
DEFAULT_GRACE_HOURS = 24


class CannotRetry(ApiError):
    status = 400
    code = "cannot_retry"
    message = "Delivery already succeeded or max retries reached."


def present(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "is_active": endpoint.is_active,
        "success_count": endpoint.success_count,
        "failure_count": endpoint.failure_count,
        "consecutive_failures": endpoint.consecutive_failures,
        "last_delivery_at": iso(endpoint.last_delivery_at),
        "disabled_reason": endpoint.disabled_reason,
        "created_at": iso(endpoint.created_at),
        "updated_at": iso(endpoint.updated_at),
    }


def present_delivery(delivery: Delivery) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "response_code": delivery.response_code,
        "attempt": delivery.attempt,
        "delivered_at": iso(delivery.delivered_at),
        "next_retry_at": iso(delivery.next_attempt_at) if delivery.status == "retrying" else None,
        "created_at": iso(delivery.created_at),
        "updated_at": iso(delivery.updated_at),
    }
    return item


def present_attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "status_code": attempt.status_code,
        "response_body": attempt.response_body,
        "error": attempt.error,
        "duration_ms": attempt.duration_ms,
        "created_at": iso(attempt.created_at),
    }


def check_patterns(patterns: list[str] | None, fields: dict[str, list[str]]) -> None:
    if patterns is None:
        return
    if not patterns:
        fields.setdefault("events", []).append("The events must list at least one event.")
    bad = [p for p in patterns if pattern_problem(p)]
    if bad:
        fields.setdefault("events", []).append(
            f"Invalid event pattern(s): {', '.join(bad[:5])}. Use an event type "
            "(post.created), a prefix pattern (post.*) or *."
        )


class WebhookService:
    def __init__(
        self,
        db: Database,
        plans: Plans,
        clock: Clock,
        settings: Settings,
        box: SecretBox,
        notifier: Notifier,
        entitlements: EntitlementService | None = None,
    ) -> None:
        self.db, self.plans, self.clock, self.settings, self.box = db, plans, clock, settings, box
        self.notifier = notifier
        # The endpoint cap: the tier's "webhooks" limit with the workspace's overrides
        # (core-api entitlements grant/set), or the plans file's limit alone without it.
        self.entitlements = entitlements
        self._transport: Transport | None = None  # for test sends; made on first use

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    async def _url_problem(self, url: str) -> str | None:
        problem = await resolve_problem(url, self.settings)
        return None if problem is None else f"The url {problem}."

    # -- endpoints -------------------------------------------------------------------

    async def list_page(self, workspace_id: int, query: ListQuery) -> tuple[list[Endpoint], int]:
        page = await repo.page_endpoints(self.db, workspace_id, query)
        total = query.total_from_page(len(page))
        if total is None:
            total = await repo.count_endpoints_matching(self.db, workspace_id, query)
        return page, total

    async def get(self, workspace_id: int, endpoint_id: int) -> Endpoint:
        found = await repo.get_endpoint(self.db, workspace_id, endpoint_id)
        if found is None:
            raise NotFound()
        return found

    async def create(
        self, workspace: Workspace, url: str, events: list[str], secret: str | None
    ) -> tuple[Endpoint, str]:
        errors: dict[str, list[str]] = {}
        if problem := await self._url_problem(url):
            errors["url"] = [problem]
        check_patterns(events, errors)
        if secret is not None:
            try:
                signing.decode_secret(secret)
            except ValueError as exc:
                errors["secret"] = [f"The secret is invalid: {exc}."]
        if errors:
            raise ValidationFailed(errors)
        secret = secret or signing.generate_secret()
        tiers = self.plans.tiers
        limit = self.plans.limit(workspace.tier, "webhooks") if workspace.tier in tiers else -1
        async with self.db.transaction() as tx:
            # Count and insert in one transaction that first locks the workspace row
            # (PostgreSQL; SQLite serialises writers): exact under concurrent creates.
            if self.entitlements is not None:
                await self.entitlements.enforce_count(tx, "webhooks", workspace.id)
            elif limit >= 0:
                await repo.lock_workspace(tx, workspace.id, self.db.dialect)
                if await repo.count_endpoints(tx, workspace.id) >= limit:
                    raise FeatureLimitReached("webhooks", self.settings.upgrade_url)
            created = await repo.create_endpoint(
                tx,
                workspace_id=workspace.id,
                url=url,
                events=events,
                secret_sealed=self.box.seal(workspace.id, secret),
                now=self.clock.now_ms(),
            )
        self.notifier.notify()  # a threshold event enforce_count may have published
        return created, secret

    async def update(
        self,
        workspace_id: int,
        endpoint_id: int,
        *,
        url: str | None,
        events: list[str] | None,
        is_active: bool | None,
    ) -> Endpoint:
        await self.get(workspace_id, endpoint_id)  # 404 before judging the body's values
        errors: dict[str, list[str]] = {}
        if url is not None and (problem := await self._url_problem(url)):
            errors["url"] = [problem]
        check_patterns(events, errors)
        if errors:
            raise ValidationFailed(errors)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            updated = await repo.update_endpoint(
                tx, workspace_id, endpoint_id, url=url, events=events, is_active=is_active, now=now
            )
            if updated is None:
                raise NotFound()
            if is_active is False:  # as a disable: what is queued fails, nothing new queues
                await repo.fail_queued(tx, endpoint_id, now)
        return updated

    async def delete(self, workspace_id: int, endpoint_id: int) -> None:
        if not await repo.delete_endpoint(self.db, workspace_id, endpoint_id):
            raise NotFound()

    async def rotate(
        self, workspace_id: int, endpoint_id: int, grace_hours: int, secret: str | None
    ) -> tuple[Endpoint, str, int]:
        """A new secret (returned once); the current one keeps signing beside it until the
        grace period ends. A rotation during a grace period drops the oldest secret."""
        current = await self.get(workspace_id, endpoint_id)
        if secret is not None:
            try:
                signing.decode_secret(secret)
            except ValueError as exc:
                raise ValidationFailed.field("secret", f"The secret is invalid: {exc}.") from None
        secret = secret or signing.generate_secret()
        now = self.clock.now_ms()
        grace_ends = now + grace_hours * 3_600_000
        swapped = await repo.rotate_secret(
            self.db,
            workspace_id,
            endpoint_id,
            new_sealed=self.box.seal(workspace_id, secret),
            previous_sealed=current.secret_sealed,
            previous_expires_at=grace_ends,
            expected_sealed=current.secret_sealed,
            now=now,
        )
        if not swapped:
            raise ValidationFailed.field("id", "The secret was rotated concurrently; retry.")
        return await self.get(workspace_id, endpoint_id), secret, grace_ends

    def signing_keys(self, endpoint: Endpoint, now: int) -> list[bytes]:
        return live_keys(
            self.box,
            endpoint.workspace_id,
            endpoint.secret_sealed,
            endpoint.previous_secret_sealed,
            endpoint.previous_secret_expires_at,
            now,
        )

    async def test(self, workspace_id: int, endpoint_id: int) -> dict[str, Any]:
        """Send a signed ``webhook.test`` event now and report what came back. Nothing is
        queued or retried; the endpoint's counters do not move."""
        endpoint = await self.get(workspace_id, endpoint_id)
        now = self.clock.now_ms()
        event_id = new_event_id()
        body = envelope(
            event_id,
            "webhook.test",
            now,
            workspace_id,
            {"message": "This is a test event from core-api.", "endpoint_id": endpoint.id},
        )
        # The signature's timestamp is real time, as in delivery (receivers check it).
        stamp = int(time.time())
        headers = signing.headers(self.signing_keys(endpoint, now), event_id, stamp, body)
        if self._transport is None:
            self._transport = Transport(self.settings, max_connections=32, per_host=4)
        outcome = await self._transport.post(
            endpoint.url, headers, body, float(self.settings.webhook_timeout_seconds)
        )
        if outcome.ok:
            return {
                "success": True,
                "status_code": outcome.status,
                "response_time_ms": outcome.duration_ms,
                "response_body": outcome.body,
            }
        result: dict[str, Any] = {
            "success": False,
            "status_code": outcome.status,
            "error": outcome.error or f"HTTP {outcome.status}",
            "response_time_ms": outcome.duration_ms,
        }
        if outcome.status is not None:
            result["response_body"] = outcome.body
        return result

    # -- deliveries ------------------------------------------------------------------

    async def deliveries(
        self, workspace_id: int, endpoint_id: int, query: ListQuery
    ) -> tuple[list[Delivery], int]:
        await self.get(workspace_id, endpoint_id)
        page = await repo.page_deliveries(self.db, endpoint_id, query)
        total = query.total_from_page(len(page))
        if total is None:
            total = await repo.count_deliveries(self.db, endpoint_id, query)
        return page, total

    async def delivery(
        self, workspace_id: int, endpoint_id: int, delivery_id: int
    ) -> tuple[Delivery, list[Attempt]]:
        await self.get(workspace_id, endpoint_id)
        found = await repo.get_delivery(self.db, endpoint_id, delivery_id)
        if found is None:
            raise NotFound()
        return found, await repo.attempts_of(self.db, delivery_id)

    async def retry(self, workspace_id: int, endpoint_id: int, delivery_id: int) -> dict[str, Any]:
        """Queue one more attempt now. Refused (400 cannot_retry) when it succeeded, is
        already queued or being sent, used its MAX_MANUAL_RETRIES, or the endpoint is
        disabled."""
        endpoint = await self.get(workspace_id, endpoint_id)
        found = await repo.get_delivery(self.db, endpoint_id, delivery_id)
        if found is None:
            raise NotFound()
        if not endpoint.is_active:
            raise CannotRetry("The endpoint is disabled; enable it before retrying.")
        now = self.clock.now_ms()
        wall = wall_ms()
        row = await repo.requeue(self.db, endpoint_id, delivery_id, now, wall, MAX_MANUAL_RETRIES)
        if row is None:
            current = await repo.get_delivery(self.db, endpoint_id, delivery_id)
            raise CannotRetry(_why_not(current, wall))
        self.notifier.wake()
        return {"id": row["id"], "status": row["status"], "attempt": int(row["attempt"]) + 1}


def wall_ms() -> int:
    """Wall-clock ms for leases, which coordinate processes (never the injectable clock)."""
    return time.time_ns() // 1_000_000


def _why_not(delivery: Delivery | None, wall: int) -> str:
    if delivery is None:
        return "The delivery no longer exists."
    if delivery.status == "success":
        return "Delivery already succeeded."
    if delivery.manual_retries >= MAX_MANUAL_RETRIES:
        return f"Max retries reached: {MAX_MANUAL_RETRIES} manual retries per delivery."
    if delivery.locked_until is not None and delivery.locked_until >= wall:
        return "The delivery is being sent right now."
    return "The delivery is already queued."


def live_keys(
    box: SecretBox,
    workspace_id: int,
    sealed: bytes,
    previous: bytes | None,
    previous_expires_at: int | None,
    now: int,
) -> list[bytes]:
    """The HMAC keys that sign now: the current secret, and the previous one while its
    grace period lasts."""
    keys = [signing.decode_secret(box.open(workspace_id, sealed))]
    if previous is not None and previous_expires_at is not None and previous_expires_at > now:
        keys.append(signing.decode_secret(box.open(workspace_id, previous)))
    return keys
