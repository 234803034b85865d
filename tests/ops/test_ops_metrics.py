"""/metrics: the text format, the merge over processes (dead ones folded in, so totals
never go back), and a real two-worker server whose counts add up to what was sent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from metrics_text import Series, parse, total, value

from conftest import REDIS_URL
from core_api.metrics.exposition import SERIES, render
from core_api.metrics.registry import Registry
from core_api.metrics.store import SnapshotStore, merge_gauges, merge_totals
from support import (
    Launcher,
    Server,
    children,
    core_api_command,
    fresh_connection_client,
    fresh_database,
    hook_receiver,
    printed_key,
    served_env,
)

ROUTE = "/api/v1/workspaces/{id:id}"


def test_requests_render_as_cumulative_histograms_and_counts() -> None:
    registry = Registry()
    registry.request("GET", ROUTE, 200, 0.0003)
    registry.request("GET", ROUTE, "200 OK", 0.2)  # Falcon's two spellings: one status
    registry.request("GET", None, 404, 0.001)
    registry.rate_limited("pixel")
    registry.observe("core_api_pixel_flush_duration_seconds", 0.02)
    totals = merge_totals([registry.snapshot()])
    series, types = parse(render(totals["counters"], totals["histograms"], {}))
    hist = "core_api_http_request_duration_seconds"
    labels = {"method": "GET", "route": ROUTE, "status": "200"}
    assert value(series, f"{hist}_count", **labels) == 2
    assert value(series, f"{hist}_bucket", **labels, le="0.0005") == 1
    assert value(series, f"{hist}_bucket", **labels, le="0.1") == 1
    assert value(series, f"{hist}_bucket", **labels, le="0.25") == 2
    assert value(series, f"{hist}_bucket", **labels, le="+Inf") == 2
    assert value(series, f"{hist}_sum", **labels) == pytest.approx(0.2003)
    assert value(series, "core_api_http_requests_total", **labels) == 2
    assert (
        value(series, "core_api_http_requests_total", method="GET", route="unmatched", status="404")
        == 1
    )
    assert value(series, "core_api_rate_limited_total", limit="pixel") == 1
    assert value(series, "core_api_pixel_flush_duration_seconds_count") == 1
    assert types[hist] == "histogram" and types["core_api_rate_limited_total"] == "counter"
    assert set(types) <= set(SERIES)


_WRITER = """
import sys
from core_api.metrics.store import SnapshotStore
store = SnapshotStore(sys.argv[1])
store.write({"counters": [["core_api_rate_limited_total", [["limit", "pixel"]], 5]],
             "histograms": [],
             "gauges": [["core_api_usage_flush_lag_seconds", [], 7.0],
                        ["core_api_usage_pending_units", [], 3]]})
print("written", flush=True)
if sys.argv[2] == "wait":
    sys.stdin.readline()
"""


def _writer(directory: Path, wait: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), "wait" if wait else "exit"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    return proc


def test_snapshots_of_other_processes_merge_and_dead_ones_are_folded(tmp_path: Path) -> None:
    own = {
        "counters": [["core_api_rate_limited_total", [["limit", "pixel"]], 1]],
        "histograms": [],
        "gauges": [
            ["core_api_usage_flush_lag_seconds", [], 2.0],
            ["core_api_usage_pending_units", [], 4],
        ],
    }
    store = SnapshotStore(tmp_path)
    with _writer(tmp_path, wait=True) as live:  # closes its pipes
        snapshots, dead = store.collect(own)
        assert live.stdin is not None
        live.stdin.write("\n")
    assert len(snapshots) == 2
    counters = merge_totals([*snapshots, dead])["counters"]
    assert counters == [["core_api_rate_limited_total", [["limit", "pixel"]], 6]]
    gauges = merge_gauges(snapshots)
    assert gauges[("core_api_usage_flush_lag_seconds", ())] == 7.0  # the worst process
    assert gauges[("core_api_usage_pending_units", ())] == 7  # summed
    with _writer(tmp_path, wait=False):  # a second process, gone at once
        pass
    snapshots, dead = store.collect(own)
    assert len(snapshots) == 1  # only this one is alive
    assert [p.name for p in tmp_path.glob("*-*.json")] == []  # both files folded
    counters = merge_totals([*snapshots, dead])["counters"]
    assert counters == [["core_api_rate_limited_total", [["limit", "pixel"]], 11]]
    assert merge_gauges(snapshots)[("core_api_usage_pending_units", ())] == 4  # gauges go
    again, dead = store.collect(own)  # folded once, kept
    assert merge_totals([*again, dead])["counters"][0][2] == 11


@pytest.fixture
def receiver() -> Iterator[str]:
    with hook_receiver() as hooks:
        yield hooks.url


def _scrape(base: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    got = httpx.get(f"{base}/metrics", timeout=5)
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(got.text)


@pytest.mark.postgres
@pytest.mark.redis
def test_a_two_worker_server_counts_what_it_was_sent(
    tmp_path: Path, redis_prefix: str, receiver: str
) -> None:
    with fresh_database("ops") as url:
        env = served_env(
            tmp_path,
            url,
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
            auth_failure_limit="2",
            pixel_rate_limit="0",
        )
        launcher = Launcher(tmp_path)
        try:
            server = launcher.start(env, 2, "--first-run-bootstrap")
            key = printed_key(server)
            with fresh_connection_client(server, key) as client:
                made = client.post("/api/v1/webhooks", json={"url": receiver, "events": ["ops.*"]})
                assert made.status_code == 201, made.text
                site = client.post("/api/v1/pixel/sites", json={"domain": "ops.example"})
                assert site.status_code == 201, site.text
                for _ in range(20):
                    assert client.get("/api/v1/workspaces/1").status_code == 200
                for n in range(4):
                    published = client.post(
                        "/api/v1/events", json={"type": "ops.tested", "data": {"n": n}}
                    )
                    assert published.status_code == 202, published.text
                refused = [
                    client.get(
                        "/api/v1/workspaces/1", headers={"Authorization": "Bearer sk_live_nope"}
                    ).status_code
                    for _ in range(4)
                ]
                assert 429 in refused, refused
                for n in range(5):
                    tracked = client.post(
                        "/api/v1/pixel/track",
                        json={"url": f"https://ops.example/page/{n}"},
                        headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"},
                    )
                    assert tracked.json() == {"tracked": True}, tracked.text
            deadline = time.monotonic() + 30
            while True:  # snapshots are written every second; deliveries are asynchronous
                series, types = _scrape(server.base)
                labels = {"method": "GET", "route": ROUTE, "status": "200"}
                done = (
                    value(series, "core_api_http_requests_total", **labels) == 20
                    and value(series, "core_api_webhook_deliveries_total", outcome="success") == 4
                    and (value(series, "core_api_pixel_events_written_total") or 0) >= 5
                    and value(series, "core_api_processes") == 2
                )
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert done, {k: v for k, v in series.items() if "bucket" not in k[0]}
            assert value(series, "core_api_http_request_duration_seconds_count", **labels) == 20
            assert (
                value(
                    series,
                    "core_api_http_requests_total",
                    method="POST",
                    route="/api/v1/pixel/track",
                    status="200",
                )
                == 5
            )
            assert total(series, "core_api_rate_limited_total", limit="auth-failures") >= 1
            assert value(series, "core_api_webhook_queue_lag_seconds") == 0
            assert value(series, "core_api_webhook_queue_due") == 0
            assert (value(series, "core_api_pixel_flush_duration_seconds_count") or 0) >= 1
            assert value(series, "core_api_pixel_buffer_events", state="pending") is not None
            assert value(series, "core_api_usage_flush_lag_seconds") is not None
            assert value(series, "core_api_usage_pending_units") is not None
            for name, kind in types.items():
                assert SERIES[name][0] == kind, name
            # A worker killed outright: Granian starts another; what the dead one counted
            # stays in the totals (its last snapshot is folded in). The scrape above may have
            # been answered by the victim from memory, ahead of its file: let one snapshot
            # interval (1 s) pass, as a kill loses what was counted since the last snapshot.
            time.sleep(2.5)
            victim = children(server.proc.pid)[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while True:
                series, _ = _scrape(server.base)
                alive = value(series, "core_api_processes") == 2 and victim not in children(
                    server.proc.pid
                )
                if alive or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert alive
            assert value(series, "core_api_http_requests_total", **labels) == 20
            assert value(series, "core_api_webhook_deliveries_total", outcome="success") == 4
        finally:
            launcher.stop_all()


def test_every_series_is_documented_with_its_type() -> None:
    """docs/operations.md's table names every series of the catalogue, with its type."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    rows = dict(re.findall(r"^\| `(core_api_[a-z_]+)` \| (counter|gauge|histogram) \|", doc, re.M))
    assert rows == {name: kind for name, (kind, _) in SERIES.items()}


@contextmanager
def _one_worker_server(
    tmp_path: Path, **settings: str
) -> Iterator[tuple[Server, str, dict[str, str]]]:
    """A one-worker server on a fresh PostgreSQL database: (server, its key, its
    environment). One worker, so every scrape is answered by the process that holds the
    numbers."""
    with fresh_database("ops") as url:
        env = served_env(tmp_path, url, **settings)
        launcher = Launcher(tmp_path)
        try:
            server = launcher.start(env, 1, "--first-run-bootstrap")
            yield server, printed_key(server), env
        finally:
            launcher.stop_all()


def _scrape_until(base: str, done: Callable[[Series], bool], within: float) -> Series:
    """Scrapes until ``done`` holds or ``within`` seconds pass; returns the last scrape."""
    deadline = time.monotonic() + within
    while True:
        series, _ = _scrape(base)
        if done(series) or time.monotonic() > deadline:
            return series
        time.sleep(0.2)


@pytest.mark.postgres
def test_webhook_queue_lag_grows_while_no_worker_delivers_and_falls_back_after(
    tmp_path: Path,
) -> None:
    """An API node without the embedded worker queues deliveries that nobody sends: they
    are due, so the lag is their age. A ``core-api worker`` then delivers them: 0 again."""
    with (
        hook_receiver() as hooks,
        _one_worker_server(tmp_path, embedded_worker="false") as (server, key, env),
    ):
        with fresh_connection_client(server, key) as client:
            made = client.post("/api/v1/webhooks", json={"url": hooks.url, "events": ["ops.*"]})
            assert made.status_code == 201, made.text
            published = []
            for n in range(3):
                got = client.post("/api/v1/events", json={"type": "ops.lag", "data": {"n": n}})
                assert got.status_code == 202, got.text
                published.append(got.json()["data"]["id"])
        lag = "core_api_webhook_queue_lag_seconds"
        series = _scrape_until(server.base, lambda s: (value(s, lag) or 0) >= 1.0, within=5)
        assert value(series, "core_api_webhook_queue_due") == 3
        assert 1.0 <= (value(series, lag) or 0) < 30, value(series, lag)
        assert hooks.received == []  # held off: this node sends nothing
        worker_log = tmp_path / "worker.err"
        with open(worker_log, "wb") as err:
            worker = subprocess.Popen(
                [*core_api_command(), "worker"],
                env={**env, "CORE_API_PORT": str(server.port)},  # the server's metrics dir
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        try:
            series = _scrape_until(
                server.base,
                lambda s: value(s, lag) == 0 and value(s, "core_api_webhook_queue_due") == 0,
                within=15,
            )
            assert value(series, lag) == 0, worker_log.read_text()
            assert value(series, "core_api_webhook_queue_due") == 0
            assert sorted(hooks.received) == sorted(published)
            # The worker's own counters reach this server's /metrics (its snapshot file).
            delivered = "core_api_webhook_deliveries_total"
            series = _scrape_until(
                server.base, lambda s: value(s, delivered, outcome="success") == 3, within=5
            )
            assert value(series, delivered, outcome="success") == 3, worker_log.read_text()
            assert value(series, "core_api_processes") == 2  # the server and the worker
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=15) == 0, worker_log.read_text()
        # Stopped, its counts stay (folded into the dead processes' totals).
        series, _ = _scrape(server.base)
        assert value(series, "core_api_webhook_deliveries_total", outcome="success") == 3


@pytest.mark.postgres
def test_usage_flush_lag_grows_while_the_flush_is_held_off_and_falls_back_after(
    tmp_path: Path,
) -> None:
    """A transaction holding ``entitlement_usage`` (as a long migration or a stuck
    database would) keeps the usage flush from writing: the counted call stays pending and
    the lag grows past the 2 s flush interval. Released, the flush writes it: 0 again."""
    lag, pending = "core_api_usage_flush_lag_seconds", "core_api_usage_pending_units"
    with _one_worker_server(tmp_path) as (server, key, env):
        series, _ = _scrape(server.base)
        assert value(series, lag) == 0 and value(series, pending) == 0  # nothing counted
        with psycopg.connect(env["CORE_API_DATABASE_URL"]) as holder:
            holder.execute("LOCK TABLE entitlement_usage IN EXCLUSIVE MODE")  # reads pass
            with fresh_connection_client(server, key) as client:
                assert client.get("/api/v1/workspaces/1").status_code == 200  # one api_call
            series = _scrape_until(server.base, lambda s: (value(s, lag) or 0) >= 3.0, within=6)
            assert (value(series, lag) or 0) >= 3.0, value(series, lag)
            assert value(series, pending) == 1
            holder.rollback()  # the lock goes: the waiting flush writes
            series = _scrape_until(
                server.base, lambda s: value(s, lag) == 0 and value(s, pending) == 0, within=6
            )
            assert value(series, lag) == 0 and value(series, pending) == 0
            used = holder.execute(
                "SELECT SUM(used) FROM entitlement_usage WHERE feature = 'api_calls'"
            ).fetchone()
            assert used == (1,)
