"""Rust hot paths of core-api (private; import only from inside core_api).

Hand-kept stub for the PyO3 module built from ``rust/python/``; ``make lint`` checks it
against the built module with stubtest. Invalid arguments raise ``ValueError``; I/O
failures raise ``OSError``.
"""

from os import PathLike
from typing import ClassVar, Self, final

__all__ = [
    "PIXEL_COLUMNS",
    "KeyCache",
    "PixelBatch",
    "PixelBuffer",
    "PixelGate",
    "PixelHit",
    "PixelSessions",
    "RateTier",
    "SharedState",
    "constant_time_eq",
    "generate_key",
    "hash_key",
    "key_prefix",
    "pixel_headers",
    "pixel_hit",
    "pixel_parse_hit",
    "pixel_visitor_hash",
    "rate_limit_headers",
    "webhook_sign",
]

def generate_key() -> str:
    """A new key: ``sk_live_`` + 32 base62 (OS randomness) + 6 base62 CRC32 of the rest."""

def hash_key(pepper: bytes, key: str) -> bytes:
    """HMAC-SHA256(pepper, key): 32 bytes."""

def key_prefix(key: str) -> str:
    """The displayable prefix: the first 11 characters (``sk_live_`` + 3)."""

def constant_time_eq(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two byte strings."""

def webhook_sign(secrets: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of
    ``{msg_id}.{timestamp}.{body}`` per secret, space-separated in the order given.
    No secrets, or an empty one, raise ValueError."""

@final
class RateTier:
    """Validated token-bucket parameters (a tier) for :meth:`SharedState.rate_take`.

    Build one per tier at startup and reuse it: validation happens here, not per request.
    ``capacity`` is the bucket size in tokens (a new bucket starts full),
    ``refill_per_sec`` the tokens added per second; both must be finite and > 0
    (else ValueError).
    """

    def __new__(cls, capacity: float, refill_per_sec: float) -> Self: ...

@final
class SharedState:
    """Host-wide shared memory (an mmapped file) used by every worker process.

    Holds the cache-invalidation generation, the invalidation log and the token
    buckets. The file at
    ``path`` (parent directories are created) is created, or replaced if
    incompatible, race-safely; it holds only transient state. ``rate_slots``
    buckets, 1..2**24 (else ValueError).
    """

    def __new__(cls, path: str | PathLike[str], rate_slots: int = 65536) -> Self: ...
    def generation(self) -> int:
        """Current invalidation generation."""

    def bump_generation(self) -> int:
        """Increment the generation (invalidates every KeyCache on the host); return it."""

    log_len: ClassVar[int]
    """Entries the invalidation log keeps: a reader further behind must flush everything."""

    def log_head(self) -> int:
        """Entries ever appended to the invalidation log (one atomic load)."""

    def log_append(self, targets: list[tuple[str, int]]) -> int:
        """Append ``(kind, id)`` targets (kind ``key``, ``workspace``, ``user``,
        ``key_list`` or ``workspace_list``, else ValueError), all visible at once; return
        the new head."""

    def log_flush(self) -> int:
        """Ask every process on the host for a full flush (also bumps the generation);
        return the new generation."""

    def log_read(self, start: int, end: int) -> list[tuple[str, int]] | None:
        """The targets appended in ``[start, end)``, or None when the caller must flush
        everything: the range fell out of the ring, was overwritten meanwhile, lies beyond
        the head (a new file), or holds a full flush."""

    def log_touches(self, since: int, targets: list[tuple[str, int]]) -> bool:
        """Whether anything appended since head ``since`` may touch one of ``targets``
        (names one, is a flush, or can no longer be read). A value read from the database
        after the head was ``since`` may be cached only when this is False."""

    def rate_take(
        self, bucket_key: bytes, tier: RateTier, now_ns: int, cost: float = 1.0, /
    ) -> tuple[bool, int, float, float]:
        """Take ``cost`` tokens from the bucket of ``bucket_key`` if available.

        Returns ``(allowed, remaining, retry_after_s, reset_after_s)``: the whole tokens
        left (floored, >= 0), seconds until ``cost`` tokens are available (``0.0`` if
        allowed; for a cost above capacity, until full), seconds until the bucket is full.
        A new bucket starts full. ``now_ns`` is a monotonic clock shared by all processes
        (``time.monotonic_ns()``); going backwards adds no tokens. Raises ValueError
        unless ``now_ns >= 0`` and ``cost`` is finite and >= 0.
        """

    def rate_take_headers(
        self,
        bucket_key: bytes,
        tier: RateTier,
        now_ns: int,
        now_s: float,
        raw: tuple[bytes, bytes, bytes],
        /,
    ) -> list[tuple[bytes, bytes]] | None:
        """``rate_take`` of one token and, when allowed, the five rate-limit headers of
        the decision (``rate_limit_headers(raw, remaining, now_s + reset_after,
        reset_after)``) in one call; None when refused (nothing taken)."""

@final
class KeyCache:
    """Per-process bounded cache: HMAC-SHA256(pepper, key) -> resolved key object.

    ``capacity`` >= 1 entries (else ValueError); when full, about 1/8 are evicted at
    random.
    """

    def __new__(cls, pepper: bytes, capacity: int = 100_000) -> Self: ...
    def lookup(self, key: str, generation: int, now_ms: int) -> tuple[bytes, object | None]:
        """Sync ``generation`` (clears the cache if it changed), hash ``key``, look it up.

        Returns ``(hash, value)`` with ``value`` None on a miss; a hit records
        ``now_ms`` as last use. A malformed key returns ``(b"", None)`` unhashed.
        """

    def insert(
        self,
        key_hash: bytes,
        key_id: int,
        value: object,
        generation: int | None = None,
        *,
        user_id: int = 0,
        workspace_id: int = 0,
    ) -> None:
        """Cache ``value`` under a 32-byte hash from ``lookup``.

        A key id maps to one hash (a new hash replaces the old entry). With
        ``generation`` (the one passed to the ``lookup`` that missed), the insert
        is skipped if the cache has since seen another generation. ``user_id`` and
        ``workspace_id`` (the key's user and home workspace; 0 = none) let
        :meth:`evict_user` and :meth:`evict_workspace` find the entry.
        """

    def evict_key(self, key_id: int) -> bool:
        """Drop the entry of key ``key_id``; whether there was one."""

    def evict_workspace(self, workspace_id: int) -> int:
        """Drop the entries of keys homed in ``workspace_id``; return how many."""

    def evict_user(self, user_id: int) -> int:
        """Drop the entries of keys of ``user_id``; return how many."""

    def clear(self) -> int:
        """Drop every entry (unflushed usage is kept for the next drain); return how many."""

    def __len__(self) -> int: ...
    def stats(self) -> tuple[int, int]:
        """``(hits, misses)`` of lookups of well-formed keys so far."""

    def note_use(self, key_id: int, at_ms: int) -> None:
        """Record a use resolved from the database (a cache miss) for the next drain."""

    def drain_last_used(self) -> list[tuple[int, int]]:
        """``(key_id, last_used_ms)`` of entries used since the last drain."""

# --- pixel ingest (rust/pixel.rs) ---------------------------------------------------------

PIXEL_COLUMNS: list[str]
"""The ``pixel_events`` columns, in the order of :meth:`PixelBatch.copy_binary` and
:meth:`PixelBatch.rows`."""

def pixel_visitor_hash(key: bytes, site_id: int, ip: str, user_agent: str) -> int:
    """SipHash-2-4 under ``key`` (16 bytes, else ValueError) of (site id, IP, user agent),
    length-delimited, as a signed 64-bit integer."""

def pixel_parse_hit(
    body: bytes,
) -> tuple[str, str, str, str, str | None, str | None, str | None, str | None] | None:
    """The fields of ``Hit`` (pixel/ingest.py) for a track body, parsed and validated in
    one pass (rust/pixel_hit.rs), or None when ``parse_hit`` must decide: every invalid
    body, and valid ones outside the common case (non-ASCII URLs, whitespace to strip,
    float properties). Never disagrees with ``parse_hit`` when it answers."""

@final
class PixelHit:
    """A track body parsed by the Rust twin of ``parse_hit``, kept in Rust for
    :meth:`PixelGate.decide`."""

    def fields(
        self,
    ) -> tuple[str, str, str, str, str | None, str | None, str | None, str | None]:
        """The fields of ``Hit`` (as ``pixel_parse_hit`` returns them)."""

def pixel_headers(
    raw: list[tuple[bytes, bytes]], max_body: int
) -> tuple[int, bytes, bytes | None, bytes | None, bytes | None, bytes | None, bytes | None] | None:
    """``(content_length, user_agent (b"" when absent), origin, dnt, sec_gpc,
    x_forwarded_for, x_request_id)`` from an ASGI scope's headers (a repeated header by
    its last value), or None when the track fast path does not take the body: a content
    type other than JSON or text/plain, a Content-Length absent, malformed or over
    ``max_body``, or a header name that is not bytes."""

def rate_limit_headers(
    tier: tuple[bytes, bytes, bytes], remaining: int, reset_at: float, reset_after: float
) -> list[tuple[bytes, bytes]]:
    """The five rate-limit headers as ASGI pairs: ``tier`` is (limit, policy, policy
    name); ``reset_at`` (epoch seconds) and ``reset_after`` (seconds) are rounded up."""

def pixel_hit(body: bytes) -> PixelHit | None:
    """``pixel_parse_hit``, the result kept in Rust; None when ``parse_hit`` must decide."""

@final
class PixelGate:
    """``PixelIngest._decide`` for what Python taught it (rust/pixel_gate.rs), over the
    given session table and buffer: one call per event in the common case. Whatever it
    was not taught (a host, an agent, today's keys, a newer log head) and every error is
    deferred, with nothing changed."""

    def __new__(cls, sessions: PixelSessions, buffer: PixelBuffer) -> Self: ...
    def decide(
        self,
        hit: PixelHit,
        ip: str,
        user_agent: bytes,
        origin: bytes | None,
        dnt: bytes | None,
        gpc: bytes | None,
        now_ms: int,
        head: int,
    ) -> tuple[int, int, int]:
        """``(0, workspace_id, pending)`` tracked; ``(1, site_id, 0)`` a bot; ``(2..5, 0,
        0)`` not tracked (do_not_track, excluded_path, feature_disabled, sampled_out);
        ``(6, 0, 0)`` the buffer is full; ``(-1, 0, 0)`` deferred to Python."""

    def learn_site(
        self,
        host: str,
        head: int,
        id: int,
        workspace_id: int,
        domain: str,
        allowed_origins: list[str],
        honor_dnt: bool,
        pageviews: bool,
        events: bool,
        sessions: bool,
        sample_rate: float,
        excluded_paths: list[str],
    ) -> bool:
        """Learn ``host``'s enabled site as read at invalidation-log head ``head``; False
        when not learnt (an older head, or a glob among the excluded paths)."""

    def learn_agent(self, user_agent: str, bot: bool, browser: str, device: str) -> None:
        """Learn a user agent's class (ASCII agents only)."""

    def learn_keys(self, day: int, key: bytes, previous: bytes | None) -> None:
        """Today's 16-byte key and yesterday's, for UTC day ``day``."""

    def forget(self) -> None:
        """Forget everything learnt."""

@final
class PixelBatch:
    """Events taken from a :class:`PixelBuffer` for one write; pass it back to
    :meth:`PixelBuffer.commit` or :meth:`PixelBuffer.restore` exactly once (empty after)."""

    def __len__(self) -> int: ...
    def copy_binary(self) -> bytes:
        """The batch as one PostgreSQL binary COPY payload (header, rows, trailer)."""

    def rows(
        self,
    ) -> list[tuple[int, int, str, str, str | None, int, int | None, str, str, str | None]]:
        """The batch as ``executemany`` parameter tuples, columns in ``PIXEL_COLUMNS`` order."""

@final
class PixelBuffer:
    """Bounded FIFO of tracked events: buffered plus in-flight events never exceed
    ``capacity`` (>= 1, else ValueError). One event loop uses it: no lock."""

    def __new__(cls, capacity: int) -> Self: ...
    def push(
        self,
        site_id: int,
        ts: int,
        name: str,
        path: str,
        referrer_source: str | None,
        visitor_id: int,
        session_id: int | None,
        browser: str,
        device: str,
        props: str | None,
    ) -> bool:
        """Append one event; False when full (the event is not kept)."""

    def take(self, max: int) -> PixelBatch:
        """Up to ``max`` (>= 1) of the oldest events, now in flight."""

    def commit(self, batch: PixelBatch) -> int:
        """The batch was written: it stops counting against the capacity; its size."""

    def restore(self, batch: PixelBatch) -> int:
        """The write failed: the batch goes back to the front, in order; its size."""

    @property
    def capacity(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    def is_full(self) -> bool: ...

@final
class PixelSessions:
    """Per-process session table (visitor id -> session id, last event time), at most
    ``capacity`` entries; a visitor idle more than ``idle_ms`` starts a new session."""

    def __new__(cls, capacity: int, idle_ms: int = 1_800_000) -> Self: ...
    def identify(
        self,
        key: bytes,
        previous: bytes | None,
        site_id: int,
        ip: str,
        user_agent: str,
        now_ms: int,
    ) -> tuple[int, int]:
        """``(visitor_id, session_id)``: keyed hashes under today's 16-byte key, or
        yesterday's (``previous``) when that visitor's session is still running."""

    def sweep(self, now_ms: int) -> int:
        """Forget sessions idle longer than the window; how many were dropped."""

    def __len__(self) -> int: ...
