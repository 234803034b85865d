"""Idempotency-Key on POST/PUT/PATCH/DELETE, scoped to the API key.

The database holds the one durable record, in every mode: the first request claims the
key with an INSERT on the primary key (an in-flight row with a lock); its response is
stored when it completes and replayed for 24 h with ``Idempotent-Replayed: true``. Redis
is not used: a record that lived in Redis was lost or unreachable across a Redis outage and
the key then ran twice. When the database cannot be reached the request is refused with a
503 rather than run unguarded.

The same key with a different request (method, path, query, ``X-Workspace-ID`` or body) is
a 422; a duplicate while the first is still running is a 409. A 5xx releases the claim so
the client can retry.

Nothing readable is at rest: a row holds keyed hashes of the Idempotency-Key and of the
request, and the response (which may carry a new API key) sealed with AES-GCM under a key
derived from the server secret and the caller's own API key, so only that caller's replay
opens it.

During a rotation of the server secret (``CORE_API_SECRET_KEY_PREVIOUS`` set), a request
first looks for a record made under the previous secret (one more keyed hash and one more
read per idempotent write, only then): a completed one is replayed, one in flight is a
409, one for a different request a 422. Without the previous secret such records are not
found, and a retry runs again (docs/production.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass

import falcon
import falcon.asgi
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..clock import Clock
from ..config import Settings
from ..errors import ApiError, ServiceUnavailable, ValidationFailed
from ..storage import Database
from ..web.bodies import read_raw
from . import idempotency_repo as repo
from .auth import bearer_token

log = logging.getLogger("core_api.idempotency")

METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
IN_FLIGHT_LOCK_MS = 60_000  # a claim whose process died is taken over after this
REPLAYED_HEADERS = ("Content-Type", "Location")
_LABEL = b"idempotency-v1"
_NONCE_BYTES = 12


class InFlight(ApiError):
    status = 409
    code = "idempotency_key_in_use"
    message = "A request with this Idempotency-Key is still being processed. Retry shortly."


class Unavailable(ServiceUnavailable):
    """The claim could not be made: the request was refused before it ran."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Ticket:
    """One request's claim: the API key id, keyed hashes of the Idempotency-Key and of the
    request, and the caller's cipher for the stored response."""

    scope: int
    key: str
    fingerprint: str
    cipher: AESGCM

    def seal(self, response: Response) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        plain = orjson.dumps(response.headers) + b"\n" + response.body
        return nonce + self.cipher.encrypt(nonce, plain, self._bound_to(response.status))

    def open(self, status: int, sealed: bytes) -> Response:
        plain = self.cipher.decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], self._bound_to(status)
        )
        head, _, body = plain.partition(b"\n")  # compact JSON holds no newline
        return Response(status, orjson.loads(head), body)

    def _bound_to(self, status: int) -> bytes:
        # Associated data: a sealed body only opens in its own row, with its own status.
        return f"{self.scope}:{self.key}:{status}".encode()


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    # Keyed BLAKE2b is a MAC and PRF of its own, and about twice as fast here as HMAC.
    digest = hashlib.blake2b(key=key, digest_size=32, person=label)
    for part in parts:
        digest.update(part)
        digest.update(b"\0")
    return digest.digest()


def root_key(secret_key: bytes) -> bytes:
    """The idempotency root key: HMAC-SHA256(server secret, label), computed once."""
    return hmac.digest(secret_key, _LABEL, "sha256")


def ticket_for(
    root: bytes, token: str, scope: int, key: str, req: falcon.asgi.Request, body: bytes
) -> Ticket:
    """Everything is keyed by a MAC of the caller's own API key under the server secret:
    a database or backup dump alone reveals neither the Idempotency-Key, the request nor
    the response, and another caller cannot open them either."""
    caller = _mac(root, b"caller", token.encode())
    workspace = req.get_header("X-Workspace-ID")
    request = _mac(
        caller,
        b"request",
        req.method.encode(),
        req.path.encode(),
        req.query_string.encode(),
        b"-" if workspace is None else b"=" + workspace.encode(),
        body,  # last, so a NUL inside it cannot shift the other fields
    )
    return Ticket(
        scope,
        _mac(caller, b"key", key.encode()).hex(),
        request.hex(),
        AESGCM(_mac(caller, b"seal")),
    )


class Store:
    """Idempotency records in the database (``idempotency_records``)."""

    def __init__(
        self, db: Database, ttl_ms: int, secret_key: bytes, previous_key: bytes | None = None
    ) -> None:
        self.db, self.ttl_ms, self.root = db, ttl_ms, root_key(secret_key)
        # The previous server secret's root while it is rotated out (None otherwise).
        self.previous_root = None if previous_key is None else root_key(previous_key)

    async def claim(
        self, ticket: Ticket, now: int, previous: Ticket | None = None
    ) -> Response | None:
        """None when this request now holds the key; else the stored response to replay.
        ``previous``: the same request's ticket under the previous server secret."""
        if previous is not None:
            replay = await self._claimed_before(previous, now)
            if replay is not None:
                return replay
        scope, key = ticket.scope, ticket.key
        for _ in range(3):
            if await repo.insert(
                self.db,
                scope,
                key,
                ticket.fingerprint,
                locked_until=now + IN_FLIGHT_LOCK_MS,
                expires_at=now + self.ttl_ms,
                now=now,
            ):
                return None
            record = await repo.get(self.db, scope, key)
            if record is None:
                continue  # released or purged in between: try the insert again
            if record.expires_at <= now:
                await repo.delete_expired(self.db, scope, key, now)
                continue
            # A keyed hash, compared in constant time like every MAC here (docs/security.md).
            if not hmac.compare_digest(record.request_hash, ticket.fingerprint):
                raise ValidationFailed.field(
                    HEADER, "This Idempotency-Key was already used with a different request."
                )
            if record.status is not None:
                assert record.body is not None  # written together by complete()
                return ticket.open(record.status, record.body)
            if record.locked_until > now:
                raise InFlight()
            if await repo.take_over(
                self.db,
                scope,
                key,
                seen_locked_until=record.locked_until,
                locked_until=now + IN_FLIGHT_LOCK_MS,
            ):
                return None
        raise InFlight()

    async def _claimed_before(self, ticket: Ticket, now: int) -> Response | None:
        """A live record of this key made under the previous server secret: its response
        to replay (or 409/422 as for any record); None when there is none to honour."""
        record = await repo.get(self.db, ticket.scope, ticket.key)
        if record is None or record.expires_at <= now:
            return None
        if not hmac.compare_digest(record.request_hash, ticket.fingerprint):
            raise ValidationFailed.field(
                HEADER, "This Idempotency-Key was already used with a different request."
            )
        if record.status is not None:
            assert record.body is not None
            return ticket.open(record.status, record.body)
        if record.locked_until > now:
            raise InFlight()
        return None  # abandoned in flight: this request claims the key under the current one

    async def complete(self, ticket: Ticket, response: Response, now: int) -> None:
        await repo.complete(
            self.db, ticket.scope, ticket.key, response.status, ticket.seal(response)
        )

    async def release(self, ticket: Ticket) -> None:
        await repo.release(self.db, ticket.scope, ticket.key)


class IdempotencyGuard:
    """Called by the gateway middleware: ``begin`` after authorisation for mutating
    requests that carry the header, ``finish`` when their response is ready."""

    def __init__(self, store: Store, clock: Clock, settings: Settings) -> None:
        self.store, self.clock, self.settings = store, clock, settings

    async def begin(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, key: str) -> None:
        if not _VALID_KEY.match(key):
            raise ValidationFailed.field(
                HEADER, "The Idempotency-Key must be 1 to 255 printable ASCII characters."
            )
        body = await read_raw(req, self.settings)
        token = bearer_token(req.get_header("Authorization")) or ""  # authenticated already
        scope = req.context.principal.key_id
        ticket = ticket_for(self.store.root, token, scope, key, req, body)
        previous = None
        if self.store.previous_root is not None:
            previous = ticket_for(self.store.previous_root, token, scope, key, req, body)
        try:
            replay = await self.store.claim(ticket, self.clock.now_ms(), previous)
        except ApiError:
            raise
        except Exception as exc:
            log.warning("idempotency record unreachable (%s); refusing with 503", exc)
            raise Unavailable() from exc
        if replay is not None:
            resp.status = replay.status
            resp.data = replay.body or None
            for name, value in replay.headers.items():
                resp.set_header(name, value)
            resp.set_header("Idempotent-Replayed", "true")
            resp.complete = True  # the responder is skipped
            return
        req.context.idempotency = ticket

    async def finish(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        ticket: Ticket | None = req.context.get("idempotency")
        if ticket is None:
            return
        try:
            await self._record(resp, ticket)
        except Exception:
            # The response itself stands: a store failure must not turn it into a 500.
            # The claim stays in flight; after IN_FLIGHT_LOCK_MS a retry may take it over.
            log.exception("could not record the idempotent response for key id %s", ticket.scope)

    async def _record(self, resp: falcon.asgi.Response, ticket: Ticket) -> None:
        status = resp.status_code
        if status >= 500:
            await self.store.release(ticket)
            return
        body = resp.data
        if body is None:
            body = orjson.dumps(resp.media) if resp.media is not None else b""
            if resp.media is not None:
                resp.data = body  # serialised once: Falcon sends these bytes, not the media again
        headers = {n: v for n in REPLAYED_HEADERS if (v := resp.get_header(n)) is not None}
        if body and "Content-Type" not in headers:
            headers["Content-Type"] = falcon.MEDIA_JSON
        await self.store.complete(ticket, Response(status, headers, body), self.clock.now_ms())
