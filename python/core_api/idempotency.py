"""Idempotency-Key on POST/PUT/PATCH/DELETE, scoped to the API key.

The first request with a key claims it (an in-flight record with a lock); its response
(status, body, relevant headers) is stored when it completes and replayed for 24 h with
``Idempotent-Replayed: true``. The same key with a different request (method, path, query
or body) is a 422; a duplicate while the first is still running is a 409. A 5xx releases
the claim so the client can retry. Records live in Redis when configured (falling back to
the database if Redis fails), else in the database; both are atomic across processes.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

import falcon
import falcon.asgi
import orjson

from .clock import Clock
from .errors import ApiError, ValidationFailed
from .storage import Database, IntegrityError
from .validation import read_raw

log = logging.getLogger("core_api.idempotency")

METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
IN_FLIGHT_LOCK_MS = 60_000  # a claim whose process died is taken over after this
REPLAYED_HEADERS = ("Content-Type", "Location")


class InFlight(ApiError):
    status = 409
    code = "idempotency_key_in_use"
    message = "A request with this Idempotency-Key is still being processed. Retry shortly."


@dataclass(frozen=True, slots=True)
class Stored:
    fingerprint: str
    status: int | None  # None while in flight
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    claimed: bool
    replay: Stored | None = None


class Store(Protocol):
    async def claim(self, scope: int, key: str, fingerprint: str, now: int) -> Outcome: ...
    async def complete(self, scope: int, key: str, stored: Stored, now: int) -> None: ...
    async def release(self, scope: int, key: str) -> None: ...


def _judge(existing: Stored, fingerprint: str) -> Outcome:
    if existing.fingerprint != fingerprint:
        raise ValidationFailed.field(
            HEADER, "This Idempotency-Key was already used with a different request."
        )
    if existing.status is None:
        raise InFlight()
    return Outcome(False, existing)


class DatabaseStore:
    def __init__(self, db: Database, ttl_ms: int) -> None:
        self.db, self.ttl_ms = db, ttl_ms

    async def claim(self, scope: int, key: str, fingerprint: str, now: int) -> Outcome:
        for _ in range(3):
            try:
                await self.db.execute(
                    "INSERT INTO idempotency_records (api_key_id, idempotency_key, request_hash, "
                    "locked_until, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (scope, key, fingerprint, now + IN_FLIGHT_LOCK_MS, now + self.ttl_ms, now),
                )
                return Outcome(True)
            except IntegrityError:
                pass
            row = await self.db.fetch_one(
                "SELECT request_hash, status, headers, body, locked_until, expires_at "
                "FROM idempotency_records WHERE api_key_id = ? AND idempotency_key = ?",
                (scope, key),
            )
            if row is None:
                continue  # released or purged in between: try the insert again
            if row["expires_at"] <= now:
                await self._delete_if(scope, key, "expires_at <= ?", now)
                continue
            if (
                row["status"] is None
                and row["locked_until"] <= now
                and row["request_hash"] == fingerprint
            ):
                taken = await self.db.execute(
                    "UPDATE idempotency_records SET locked_until = ? WHERE api_key_id = ? "
                    "AND idempotency_key = ? AND status IS NULL AND locked_until = ?",
                    (now + IN_FLIGHT_LOCK_MS, scope, key, row["locked_until"]),
                )
                if taken:
                    return Outcome(True)
                continue
            return _judge(
                Stored(
                    row["request_hash"],
                    row["status"],
                    orjson.loads(row["headers"] or "{}"),
                    bytes(row["body"] or b""),
                ),
                fingerprint,
            )
        raise InFlight()

    async def _delete_if(self, scope: int, key: str, condition: str, value: int) -> None:
        await self.db.execute(
            "DELETE FROM idempotency_records WHERE api_key_id = ? AND idempotency_key = ? "  # noqa: S608
            f"AND {condition}",
            (scope, key, value),
        )

    async def complete(self, scope: int, key: str, stored: Stored, now: int) -> None:
        await self.db.execute(
            "UPDATE idempotency_records SET status = ?, headers = ?, body = ? "
            "WHERE api_key_id = ? AND idempotency_key = ?",
            (stored.status, orjson.dumps(stored.headers).decode(), stored.body, scope, key),
        )

    async def release(self, scope: int, key: str) -> None:
        await self.db.execute(
            "DELETE FROM idempotency_records WHERE api_key_id = ? AND idempotency_key = ? "
            "AND status IS NULL",
            (scope, key),
        )


class RedisStore:
    """SET NX claims an in-flight marker; completion overwrites it with the response."""

    def __init__(self, redis: Any, prefix: str, ttl_ms: int, fallback: DatabaseStore) -> None:
        self.redis, self.prefix, self.ttl_ms, self.fallback = redis, prefix, ttl_ms, fallback
        self.using_fallback: set[tuple[int, str]] = set()

    def _key(self, scope: int, key: str) -> str:
        return f"{self.prefix}idem:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def claim(self, scope: int, key: str, fingerprint: str, now: int) -> Outcome:
        marker = orjson.dumps({"f": fingerprint})
        name = self._key(scope, key)
        raw = None
        for _ in range(3):  # the record may expire between SET NX and GET
            try:
                if await self.redis.set(name, marker, nx=True, px=IN_FLIGHT_LOCK_MS):
                    return Outcome(True)
                raw = await self.redis.get(name)
            except Exception as exc:
                log.warning("Redis unavailable for idempotency (%s); using the database", exc)
                self.using_fallback.add((scope, key))
                return await self.fallback.claim(scope, key, fingerprint, now)
            if raw is not None:
                break
        if raw is None:
            raise InFlight()
        record = orjson.loads(raw)
        return _judge(
            Stored(
                record["f"],
                record.get("s"),
                record.get("h", {}),
                record.get("b", "").encode("latin-1"),
            ),
            fingerprint,
        )

    async def complete(self, scope: int, key: str, stored: Stored, now: int) -> None:
        if (scope, key) in self.using_fallback:
            self.using_fallback.discard((scope, key))
            await self.fallback.complete(scope, key, stored, now)
            return
        record = {
            "f": stored.fingerprint,
            "s": stored.status,
            "h": stored.headers,
            "b": stored.body.decode("latin-1"),
        }
        await self.redis.set(self._key(scope, key), orjson.dumps(record), px=self.ttl_ms)

    async def release(self, scope: int, key: str) -> None:
        if (scope, key) in self.using_fallback:
            self.using_fallback.discard((scope, key))
            await self.fallback.release(scope, key)
            return
        await self.redis.delete(self._key(scope, key))


def fingerprint(req: falcon.asgi.Request, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (req.method.encode(), req.path.encode(), req.query_string.encode()):
        digest.update(part)
        digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


class IdempotencyGuard:
    """Called by the gateway middleware: ``begin`` after authorisation for mutating
    requests that carry the header, ``finish`` when their response is ready."""

    def __init__(self, store: Store, clock: Clock, max_body_bytes: int) -> None:
        self.store, self.clock, self.max_body_bytes = store, clock, max_body_bytes

    async def begin(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key: str) -> None:
        if not _VALID_KEY.match(key):
            raise ValidationFailed.field(
                HEADER, "The Idempotency-Key must be 1 to 255 printable ASCII characters."
            )
        body = await read_raw(req, self.max_body_bytes)
        scope, print_ = req.context.principal.key_id, fingerprint(req, body)
        outcome = await self.store.claim(scope, key, print_, self.clock.now_ms())
        if outcome.replay is not None:
            stored = outcome.replay
            resp.status = stored.status or 200
            resp.data = stored.body or None
            for name, value in stored.headers.items():
                resp.set_header(name, value)
            resp.set_header("Idempotent-Replayed", "true")
            resp.complete = True  # the responder is skipped
            return
        req.context.idempotency = (scope, key, print_)

    async def finish(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        claim = req.context.get("idempotency")
        if claim is None:
            return
        scope, key, print_ = claim
        try:
            await self._record(resp, scope, key, print_)
        except Exception:
            # The response itself stands: a store failure must not turn it into a 500.
            # The claim expires after IN_FLIGHT_LOCK_MS and a retry then runs again.
            log.exception("could not record the idempotent response for key id %s", scope)

    async def _record(self, resp: falcon.asgi.Response, scope: int, key: str, print_: str) -> None:
        status = resp.status_code
        if status >= 500:
            await self.store.release(scope, key)
            return
        body = (
            resp.data
            if resp.data is not None
            else (orjson.dumps(resp.media) if resp.media is not None else b"")
        )
        headers = {n: v for n in REPLAYED_HEADERS if (v := resp.get_header(n)) is not None}
        if body and "Content-Type" not in headers:
            headers["Content-Type"] = falcon.MEDIA_JSON
        await self.store.complete(
            scope, key, Stored(print_, status, headers, body), self.clock.now_ms()
        )
