"""``GET /metrics``: every live serving process's numbers, merged, in the Prometheus text
format. Unauthenticated and not rate-limited, like /health: restrict it at the proxy or
switch it off (``CORE_API_METRICS_ENABLED=false``)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi

from ..storage import DatabaseUnavailable
from .collect import process_snapshot, store_for
from .exposition import CONTENT_TYPE, render
from .store import merge_gauges, merge_totals

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("core_api.metrics")

QUERY_TIMEOUT = 2.0  # seconds: a scrape never hangs on a stuck database
_DUE = (
    "SELECT MIN(next_attempt_at) AS oldest, COUNT(*) AS due FROM webhook_deliveries "
    "WHERE status IN ('pending', 'retrying') AND next_attempt_at <= ?"
)


class Metrics:
    public = True
    scopes: dict[str, str] = {}

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        own = process_snapshot(self.runtime)
        store = store_for(self.runtime)
        live, dead = store.collect(own) if store is not None else ([own], {})
        totals = merge_totals([*live, dead])
        gauges = merge_gauges(live)
        gauges[("core_api_processes", ())] = len(live)
        gauges.update(await self._webhook_queue())
        resp.content_type = CONTENT_TYPE
        resp.text = render(totals["counters"], totals["histograms"], gauges)
        resp.status = falcon.HTTP_200

    async def _webhook_queue(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The delivery queue's lag, read now (one indexed query, bounded); left out of
        the answer when the database does not answer in time."""
        now = self.runtime.clock.now_ms()
        try:
            row = await asyncio.wait_for(self.runtime.db.fetch_one(_DUE, (now,)), QUERY_TIMEOUT)
        except (DatabaseUnavailable, TimeoutError) as exc:
            log.warning("metrics: webhook queue not read: %s", exc or "timed out")
            return {}
        oldest: Any = row["oldest"] if row is not None else None
        due = int(row["due"]) if row is not None else 0
        lag = max(0.0, (now - int(oldest)) / 1000) if oldest is not None else 0.0
        return {
            ("core_api_webhook_queue_lag_seconds", ()): lag,
            ("core_api_webhook_queue_due", ()): due,
        }
