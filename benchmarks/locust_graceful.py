"""The graceful-stop load as a locust scenario (``benchmarks/graceful_stop.py --driver locust``).

Each ``GracefulUser`` sends, in turn, an idempotent ``POST /api/v1/workspaces``, a pixel
event with its own path and an event publish, and writes what the server accepted to
``BENCH_ACCEPTED_FILE`` (one JSON line per answer: ``{"kind", "id"}`` when accepted,
``{"kind", "refused"}`` when not), so that the script counting losses sees exactly what
locust's clients were told. Connection errors while the server stops are locust failures
and lines with ``"refused": "error"``: the client was not told they succeeded.

Environment: ``BENCH_KEY`` (a ``*`` key), ``BENCH_ACCEPTED_FILE``, ``BENCH_PIXEL_SITE``.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from locust import FastHttpUser, constant, events, task

KEY = os.environ.get("BENCH_KEY", "")
SITE = os.environ.get("BENCH_PIXEL_SITE", "graceful.example")
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
_numbers = itertools.count()  # one process, one greenlet at a time: unique per run
_out = open(os.environ["BENCH_ACCEPTED_FILE"], "a", buffering=1)  # noqa: SIM115 (process-long)


def _record(kind: str, accepted: str | None, status: Any) -> None:
    line = {"kind": kind, "id": accepted} if accepted else {"kind": kind, "refused": str(status)}
    _out.write(json.dumps(line) + "\n")


@events.quitting.add_listener
def _close(**_: Any) -> None:
    _out.close()


class GracefulUser(FastHttpUser):
    wait_time = constant(0)
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def _post(self, kind: str, path: str, body: str, headers: dict[str, str], ok: int) -> Any:
        with self.client.post(
            path, data=body, headers=headers, name=kind, catch_response=True
        ) as resp:
            if resp.status_code == ok:
                resp.success()
                return resp
            resp.failure(f"{resp.status_code}")
            _record(kind, None, resp.status_code or "error")
            return None

    @task
    def cycle(self) -> None:
        n = f"L{os.getpid()}-{next(_numbers)}"
        name = f"graceful {n}"
        headers = {**self.auth, "Idempotency-Key": f"graceful-{n}"}
        if self._post("write", "/api/v1/workspaces", json.dumps({"name": name}), headers, 201):
            _record("write", name, 201)
        path = f"/graceful/{n}"
        pixel = {"Content-Type": "text/plain", "User-Agent": BROWSER_UA}
        body = json.dumps({"url": f"https://{SITE}{path}"})
        resp = self._post("pixel", "/api/v1/pixel/track", body, pixel, 200)
        if resp is not None:
            tracked = resp.json().get("tracked") is True
            _record("pixel", path if tracked else None, "not tracked")
        event = json.dumps({"type": "graceful.tested", "data": {"n": n}})
        resp = self._post("event", "/api/v1/events", event, self.auth, 202)
        if resp is not None:
            _record("event", resp.json()["data"]["id"], 202)
