"""/metrics: the text format, the merge over processes (dead ones folded in, so totals
never go back), and a real two-worker server whose counts add up to what was sent."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from metrics_text import parse, total, value

from conftest import REDIS_URL, SECRET
from core_api.metrics.exposition import SERIES, render
from core_api.metrics.registry import Registry
from core_api.metrics.store import SnapshotStore, merge_gauges, merge_totals
from support import Launcher, children, clean_env, fresh_connection_client, fresh_database

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


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Receiver.received.append(json.loads(body)["id"])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


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
        env = clean_env(
            tmp_path,
            database_url=url,
            secret_key=SECRET.decode(),
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
            auth_failure_limit="2",
            pixel_rate_limit="0",
            webhook_allow_private_networks="true",
            webhook_require_https="false",
            log_level="WARNING",
        )
        launcher = Launcher(tmp_path)
        try:
            server = launcher.start(env, 2, "--first-run-bootstrap")
            from support import printed_key

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
