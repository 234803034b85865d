"""Time in one place, injectable: tests pass a manual clock instead of sleeping."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime


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


def parse_iso(text: str) -> int:
    """ISO 8601 date or date-time to epoch milliseconds; naive values are UTC.

    Raises ValueError for anything else.
    """
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)
