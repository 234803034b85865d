"""A graceful stop writes the last pixel batch and then the process's last metrics
snapshot, so ``core_api_pixel_events_written_total`` counts that batch too (the
snapshot job's own last run comes before the final pixel flush)."""

from __future__ import annotations

from pathlib import Path

import falcon.testing
import orjson
from ingest_support import CHROME, SITES, TRACK, event

from conftest import Api, make_settings
from core_api.api_keys.service import bootstrap
from core_api.app import create_app
from core_api.metrics.store import SnapshotStore
from core_api.runtime import Runtime


async def test_the_last_batch_is_in_the_last_snapshot(database_url: str, tmp_path: Path) -> None:
    events = 3
    metrics = tmp_path / "metrics"
    # No flush before the stop: the stop writes every event, after the jobs' last runs.
    settings = make_settings(
        database_url, tmp_path, metrics_dir=str(metrics), pixel_flush_ms=600_000
    )
    runtime = await Runtime.open(settings, run_migrations=True)
    boot = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, runtime.clock,
        name="m", tier="enterprise", email=None,
    )  # fmt: skip
    async with falcon.testing.ASGIConductor(create_app(settings, runtime)) as conductor:
        api = Api(conductor, boot["api_key"]["key"])
        assert (await api.post(SITES, json={"domain": "example.com", "name": "e"})).status == 201
        runtime.start_background()
        for n in range(events):
            got = await api.post(
                TRACK, json=event(f"https://example.com/{n}"), headers={"User-Agent": CHROME},
                auth=False,
            )  # fmt: skip
            assert got.json == {"tracked": True}
    await runtime.close()
    snapshot = orjson.loads((metrics / SnapshotStore(metrics).name).read_bytes())
    written = {name: value for name, _, value in snapshot["counters"]}
    assert written["core_api_pixel_events_written_total"] == events
