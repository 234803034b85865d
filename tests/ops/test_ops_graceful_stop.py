"""SIGTERM under load loses nothing accepted: ``benchmarks/graceful_stop.py`` (a real
two-worker server on PostgreSQL and Redis, idempotent writes, pixel events and webhook
publishes to a loopback receiver, a restart), in a short run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import ADMIN_URL, REDIS_URL
from support import (
    Launcher,
    fresh_connection_client,
    fresh_database,
    hook_receiver,
    printed_key,
    served_env,
)

ROOT = Path(__file__).resolve().parents[2]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_sigterm_under_load_loses_no_accepted_write_event_or_delivery() -> None:
    """SIGTERM to the main process, as an orchestrator sends it (``--signal-group``, the
    whole process group as systemd does, is the script's other mode: run by hand, see
    docs/operations.md)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORE_API_", "BENCH_"))}
    env.update(BENCH_PG_ADMIN_URL=ADMIN_URL, BENCH_REDIS_URL=REDIS_URL)
    argv = [sys.executable, "-m", "benchmarks.graceful_stop", "--seconds", "4", "--stop-after", "2"]
    argv += ["--concurrency", "4", "--exit-within", "60", "--deliver-within", "60"]
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170, check=False
    )
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    result = json.loads(done.stdout)
    assert result["exit_code"] == 0
    # The load really ran on both sides of the signal, and every kind was accepted.
    assert result["writes_accepted"] > 0 and result["pixel_accepted"] > 0
    assert result["events_accepted"] > 0
    assert result["writes_lost"] == result["pixel_lost"] == result["events_lost"] == 0
    assert result["usage_api_calls_lost"] == result["usage_pixel_events_lost"] == 0
    assert result["leases_still_held_after_stop"] == 0  # the stopped workers gave them back
    assert result["events_delivered"] == result["events_accepted"]


def _refused(port: int) -> bool:
    """A new TCP connection to the port is refused (nothing listens any more)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_a_request_in_flight_then_exits_0_with_buffers_written(
    tmp_path: Path, redis_prefix: str
) -> None:
    """SIGTERM while ``POST /webhooks/{id}/test`` waits on a receiver that takes 1.5 s:
    the server stops listening at once (new connections are refused), the request in
    flight still gets its normal answer, and the process exits 0 after writing what it
    held in memory (pixel events deferred to a minute, metered calls)."""
    delay = 1.5
    with hook_receiver(delay) as hooks, fresh_database("stop") as url:
        env = served_env(
            tmp_path,
            url,
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
            pixel_rate_limit="0",
            pixel_flush_ms="60000",  # every tracked event is still in memory at the signal
        )
        launcher = Launcher(tmp_path)
        try:
            server = launcher.start(env, 1, "--first-run-bootstrap")
            key = printed_key(server)
            with fresh_connection_client(server, key) as client:
                made = client.post("/api/v1/webhooks", json={"url": hooks.url, "events": ["x.*"]})
                assert made.status_code == 201, made.text
                site = client.post("/api/v1/pixel/sites", json={"domain": "stop.example"})
                assert site.status_code == 201, site.text
                for n in range(3):
                    tracked = client.post(
                        "/api/v1/pixel/track",
                        json={"url": f"https://stop.example/drained/{n}"},
                        headers={"User-Agent": BROWSER},
                    )
                    assert tracked.json() == {"tracked": True}, tracked.text
            hook_id = made.json()["data"]["id"]
            answers: list[httpx.Response | httpx.HTTPError] = []

            def send_test() -> None:
                try:
                    answers.append(slow.post(f"/api/v1/webhooks/{hook_id}/test"))
                except httpx.HTTPError as exc:  # cut: reported by the assertion below
                    answers.append(exc)

            with fresh_connection_client(server, key) as slow:
                sender = threading.Thread(target=send_test)
                sender.start()
                assert hooks.arrived.wait(10)  # the test send is out: the request is in flight
                signalled = time.monotonic()
                os.kill(server.proc.pid, signal.SIGTERM)
                while not _refused(server.port) and time.monotonic() - signalled < delay:
                    time.sleep(0.02)
                assert _refused(server.port)
                assert sender.is_alive()  # refused while the request in flight is still served
                sender.join(10)
            assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
            assert answers[0].status_code == 200, answers[0].text
            assert answers[0].json()["success"] is True
            assert answers[0].json()["response_time_ms"] >= delay * 1000
            assert server.proc.wait(timeout=15) == 0, server.stderr()[-3000:]
        finally:
            launcher.stop_all()
        with psycopg.connect(url) as conn:
            paths = conn.execute("SELECT path FROM pixel_events ORDER BY path").fetchall()
            usage = dict(
                conn.execute(
                    "SELECT feature, SUM(used) FROM entitlement_usage GROUP BY feature"
                ).fetchall()
            )
    assert paths == [(f"/drained/{n}",) for n in range(3)]
    # Every authenticated request is one api_call: 2 set-up requests and the drained one.
    assert usage == {"api_calls": 3, "pixel_events": 3}, usage
