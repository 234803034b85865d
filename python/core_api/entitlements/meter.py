"""Per-process usage counts that must not cost a database write per event (api_calls on
every authenticated request, pixel_events, mcp_calls): added in memory here, written by
the per-process ``entitlements.flush`` job every FLUSH_SECONDS and once more on a
graceful stop. A crash loses at most the last FLUSH_SECONDS of one process's counts."""

from __future__ import annotations

FLUSH_SECONDS = 2.0


class Meter:
    __slots__ = ("_api_calls", "_other", "in_flight")

    def __init__(self) -> None:
        self._api_calls: dict[int, int] = {}
        self._other: dict[tuple[int, str], int] = {}
        self.in_flight = 0  # units drained by a flush that has not committed yet

    def record_api_call(self, workspace_id: int) -> None:
        """One authenticated request (the gateway's hook): a dict increment, nothing more."""
        calls = self._api_calls
        calls[workspace_id] = calls.get(workspace_id, 0) + 1

    def add(self, workspace_id: int, feature: str, n: int = 1) -> None:
        """``n`` units of a metered feature (pixel_events, mcp_calls)."""
        key = (workspace_id, feature)
        self._other[key] = self._other.get(key, 0) + n

    def pending(self) -> int:
        """Units counted and not yet written, those of a flush in flight included."""
        return sum(self._api_calls.values()) + sum(self._other.values()) + self.in_flight

    def drain(self) -> dict[tuple[int, str], int]:
        calls, other = self._api_calls, self._other
        self._api_calls, self._other = {}, {}
        drained = dict(other)
        for workspace_id, n in calls.items():
            key = (workspace_id, "api_calls")
            drained[key] = drained.get(key, 0) + n
        return drained

    def restore(self, counts: dict[tuple[int, str], int]) -> None:
        """Put back counts whose flush failed (they are written by the next one)."""
        for key, n in counts.items():
            self._other[key] = self._other.get(key, 0) + n
