"""Time in one place, injectable: tests pass a manual clock instead of sleeping."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime, timedelta


class Clock:
    """``now_ms``: wall-clock epoch milliseconds, for stored timestamps and headers.
    ``monotonic_ns``: host-wide monotonic time for shared-memory buckets (never jumps)."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class ManualClock(Clock):
    """A clock that only moves when told to."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self._ns = start_ms * 1_000_000

    def now_ms(self) -> int:
        return self._ns // 1_000_000

    def monotonic_ns(self) -> int:
        return self._ns

    def advance(self, seconds: float) -> None:
        self._ns += int(seconds * 1_000_000_000)


@functools.lru_cache(maxsize=8192)
def iso(ms: int | None) -> str | None:
    """Epoch milliseconds to the reference's ISO 8601 form (``2026-01-15T10:30:00Z``).

    Cached: the same few timestamps (a workspace's, a key's) are formatted on every read.
    """
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Every stored or compared date lies in this range (after conversion to UTC), so that
# it always formats back (``iso``) and fits a 64-bit column on every backend.
MIN_MS = 0  # 1970-01-01T00:00:00Z
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
DATE_RANGE = "between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
_MAX_ISO_LENGTH = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def parse_iso(text: str) -> int:
    """ISO 8601 date or date-time to epoch milliseconds; naive values are UTC.

    Raises ValueError for anything else: non-ASCII text (``fromisoformat`` accepts
    Unicode digits), or an instant outside :data:`DATE_RANGE` once converted to UTC
    (``9999-12-31T23:59:59-23:59`` is in year 10000).
    """
    if not text.isascii() or len(text) > _MAX_ISO_LENGTH:
        raise ValueError("not an ASCII ISO 8601 date")
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    ms = (value - _EPOCH) // _ONE_MS  # exact: float seconds round up at the range's end
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError(f"the date must be {DATE_RANGE}")
    return ms
