"""This process's metrics, in memory: plain dicts that the hot paths add to.

Each Granian worker is a process, so each keeps its own counts here and writes them to a
snapshot file about once a second (``store.py``); ``GET /metrics`` merges every live
process's snapshot. Recording is a dict lookup and a list increment (no locks: one event
loop per process, and nothing here awaits).

The registry is per process on purpose (like the request-id counter): the numbers
describe the process, whichever runtime or app object served the request.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

# Seconds. Request latency: the hot GET path answers in well under a millisecond.
REQUEST_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Seconds. One pixel batch write (COPY / executemany) or one usage flush transaction.
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Histogram names and their buckets (every process uses the same, so they merge).
HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "core_api_http_request_duration_seconds": REQUEST_BUCKETS,
    "core_api_pixel_flush_duration_seconds": FLUSH_BUCKETS,
    "core_api_usage_flush_duration_seconds": FLUSH_BUCKETS,
}

Labels = tuple[tuple[str, str], ...]

# The ASGI scope key where the gateway leaves (method, route template, status) for the
# ASGI front (web/front.py), which records the request once its answer is sent.
ROUTE_KEY = "core_api.route"


class Registry:
    """Counters and histograms of one process. ``requests`` is the request path's own
    table: ``(method, route template, status) -> [bucket counts..., +Inf count, sum]``,
    turned into labelled series only when a snapshot is taken."""

    __slots__ = ("counters", "histograms", "requests", "started", "usage_flushed_at")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str | None, Any], list[float]] = {}
        self.counters: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[tuple[str, Labels], list[float]] = {}
        self.started = time.time()
        # Series that exist from the start (0), so that rate() and alerts see them before
        # the first event: every delivery outcome, the usage flush failures.
        for outcome in ("success", "http_error", "network_error", "gone", "skipped"):
            self.counters[("core_api_webhook_deliveries_total", (("outcome", outcome),))] = 0
        self.counters[("core_api_usage_flush_failures_total", ())] = 0
        self.usage_flushed_at = self.started  # wall time of the last successful usage flush

    # -- the hot path ------------------------------------------------------------------

    def request(
        self,
        method: str,
        route: str | None,
        status: Any,
        seconds: float,
        _bisect: Any = bisect_left,  # bound once: no global lookups per request
        _bounds: tuple[float, ...] = REQUEST_BUCKETS,
    ) -> None:
        """One answered request: a dict lookup, a bisect and two list updates."""
        key = (method, route, status)
        row = self.requests.get(key)
        if row is None:
            row = self.requests[key] = [0.0] * (len(_bounds) + 2)
        row[_bisect(_bounds, seconds)] += 1
        row[-1] += seconds

    def rate_limited(self, limit: str) -> None:
        self.inc("core_api_rate_limited_total", (("limit", limit),))

    def inc(self, name: str, labels: Labels = (), n: float = 1) -> None:
        key = (name, labels)
        counters = self.counters
        counters[key] = counters.get(key, 0) + n

    def observe(self, name: str, seconds: float, labels: Labels = ()) -> None:
        key = (name, labels)
        bounds = HISTOGRAMS[name]
        row = self.histograms.get(key)
        if row is None:
            row = self.histograms[key] = [0.0] * (len(bounds) + 2)
        row[bisect_left(bounds, seconds)] += 1
        row[-1] += seconds

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Counters and histograms as plain lists (JSON), request rows as labelled
        histogram series. Counts are totals since the process started."""
        histograms: dict[tuple[str, Labels], list[float]] = {
            key: list(row) for key, row in self.histograms.items()
        }
        name = "core_api_http_request_duration_seconds"
        for (method, route, status), row in list(self.requests.items()):
            labels = (
                ("method", method),
                ("route", route or "unmatched"),
                ("status", status_code(status)),
            )
            key = (name, labels)
            merged = histograms.get(key)
            if merged is None:
                histograms[key] = list(row)
            else:  # "200 OK" and 200 are one status
                for i, value in enumerate(row):
                    merged[i] += value
        return {
            "counters": [[n, list(map(list, ls)), v] for (n, ls), v in self.counters.items()],
            "histograms": [[n, list(map(list, ls)), row] for (n, ls), row in histograms.items()],
        }


def usage_flushed(seconds: float, units: int) -> None:
    """The entitlements flush job's hook: a flush succeeded (``units`` written)."""
    REGISTRY.usage_flushed_at = time.time()
    if units:
        REGISTRY.observe("core_api_usage_flush_duration_seconds", seconds)


def usage_flush_failed() -> None:
    REGISTRY.inc("core_api_usage_flush_failures_total")


def status_code(status: Any) -> str:
    """``200``, ``"200 OK"`` or ``HTTPStatus.OK`` -> ``"200"``."""
    if isinstance(status, int):
        return str(int(status))
    return str(status).split(" ", 1)[0]


REGISTRY = Registry()
