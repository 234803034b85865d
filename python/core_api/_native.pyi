"""Rust hot paths of core-api (private; import only from inside core_api).

Hand-kept stub for the PyO3 module built from ``rust/lib.rs``.
Invalid arguments raise ``ValueError``; I/O failures raise ``OSError``.
"""

from os import PathLike
from pathlib import Path
from typing import Final, Self, final

__all__ = [
    "KEY_LENGTH",
    "KEY_PREFIX",
    "KeyCache",
    "RateTier",
    "SharedState",
    "constant_time_eq",
    "generate_key",
    "hash_key",
    "is_well_formed",
    "key_prefix",
]

KEY_LENGTH: Final[int]
"""Length of a key: 46."""
KEY_PREFIX: Final[str]
"""``"sk_live_"``."""

def generate_key() -> str:
    """A new key: ``sk_live_`` + 32 base62 (OS randomness) + 6 base62 CRC32 of the rest."""

def is_well_formed(key: str) -> bool:
    """True if prefix, length, charset and checksum are valid (no lookup, no hashing)."""

def hash_key(pepper: bytes, key: str) -> bytes:
    """HMAC-SHA256(pepper, key): 32 bytes."""

def key_prefix(key: str) -> str:
    """The displayable prefix: the first 11 characters (``sk_live_`` + 3)."""

def constant_time_eq(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two byte strings."""

@final
class RateTier:
    """Validated token-bucket parameters (a tier) for :meth:`SharedState.rate_take`.

    Build one per tier at startup and reuse it: validation happens here, not per request.
    """

    def __new__(cls, capacity: float, refill_per_sec: float) -> Self:
        """Raises ValueError unless both are finite and > 0."""

    @property
    def capacity(self) -> float:
        """Bucket size in tokens (a new bucket starts full)."""

    @property
    def refill_per_sec(self) -> float:
        """Tokens added per second."""

@final
class SharedState:
    """Host-wide shared memory (an mmapped file) used by every worker process.

    Holds the cache-invalidation generation and the token buckets. The file is
    created (or replaced if incompatible) race-safely; it holds only transient
    state.
    """

    def __new__(cls, path: str | PathLike[str], rate_slots: int = 65536) -> Self:
        """Open or create the region at ``path`` with ``rate_slots`` buckets (1..2**24)."""

    @property
    def path(self) -> Path:
        """The file path."""

    @property
    def rate_slots(self) -> int:
        """Number of bucket slots."""

    def generation(self) -> int:
        """Current invalidation generation."""

    def bump_generation(self) -> int:
        """Increment the generation (invalidates every KeyCache on the host); return it."""

    def rate_check(
        self,
        bucket_key: bytes,
        capacity: float,
        refill_per_sec: float,
        cost: float,
        now_ns: int,
    ) -> tuple[bool, float, float, float]:
        """Take ``cost`` tokens if available.

        Returns ``(allowed, remaining, retry_after_s, reset_after_s)``: tokens left
        (>= 0), seconds until ``cost`` tokens are available (0 if allowed; for a
        cost above capacity, until full), seconds until the bucket is full.
        A new bucket starts full. ``now_ns`` is a monotonic clock shared by all
        processes (``time.monotonic_ns()``); going backwards adds no tokens.
        Raises ValueError unless capacity > 0, refill_per_sec > 0, cost >= 0
        (all finite) and now_ns >= 0.
        """

    def rate_take(
        self, bucket_key: bytes, tier: RateTier, now_ns: int, cost: float = 1.0, /
    ) -> tuple[bool, int, float, float]:
        """:meth:`rate_check` for a pre-validated tier: the per-request limiter check.

        Same bucket (shared with :meth:`rate_check` for the same key), same math, same
        errors for ``now_ns`` and ``cost``. Returns ``(allowed, remaining, retry_after_s,
        reset_after_s)`` where ``remaining`` is the whole tokens left (``int``, floored,
        >= 0); the two times are as in :meth:`rate_check` (``retry_after_s`` is ``0.0``
        when allowed). Positional arguments only.
        """

    def rate_peek(
        self, bucket_key: bytes, capacity: float, refill_per_sec: float, now_ns: int
    ) -> float:
        """Tokens available at ``now_ns`` without consuming (a missing bucket is full)."""

    def rate_set(self, bucket_key: bytes, tokens: float, now_ns: int) -> None:
        """Set a bucket's tokens as of ``now_ns`` (reconciliation with a global view).

        Clamped to +-capacity of the bucket's last check; negative = debt.
        """

@final
class KeyCache:
    """Per-process bounded cache: HMAC-SHA256(pepper, key) -> resolved key object."""

    def __new__(cls, pepper: bytes, capacity: int = 100_000) -> Self:
        """``capacity`` >= 1 entries; when full, about 1/8 are evicted at random."""

    @property
    def capacity(self) -> int:
        """Maximum number of entries."""

    def lookup(self, key: str, generation: int, now_ms: int) -> tuple[bytes, object | None]:
        """Sync ``generation`` (clears the cache if it changed), hash ``key``, look it up.

        Returns ``(hash, value)`` with ``value`` None on a miss; a hit records
        ``now_ms`` as last use. A malformed key returns ``(b"", None)`` unhashed.
        """

    def insert(
        self, key_hash: bytes, key_id: int, value: object, generation: int | None = None
    ) -> None:
        """Cache ``value`` under a 32-byte hash from ``lookup``.

        A key id maps to one hash (a new hash replaces the old entry). With
        ``generation`` (the one passed to the ``lookup`` that missed), the insert
        is skipped if the cache has since seen another generation.
        """

    def remove_key_id(self, key_id: int) -> None:
        """Drop the entry of ``key_id`` (no-op if absent)."""

    def clear(self) -> None:
        """Drop every entry (pending last-used times are kept for the next drain)."""

    def drain_last_used(self) -> list[tuple[int, int]]:
        """``(key_id, last_used_ms)`` of entries used since the last drain."""

    def __len__(self) -> int: ...
