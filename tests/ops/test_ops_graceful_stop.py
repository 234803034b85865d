"""SIGTERM under load loses nothing accepted: ``benchmarks/graceful_stop.py`` (a real
two-worker server on PostgreSQL and Redis, idempotent writes, pixel events and webhook
publishes to a loopback receiver, a restart), in a short run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ADMIN_URL, REDIS_URL

ROOT = Path(__file__).resolve().parents[2]

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
