"""Graceful stop: SIGTERM under load loses no accepted write, pixel event or webhook.

Runs ``core-api serve --workers 2`` on a private PostgreSQL database with Redis (a fresh
key prefix), creates a webhook endpoint pointing at a loopback receiver and a pixel site,
then drives a concurrent load, by default a locust run (``GracefulUser`` in
``benchmarks/locust_graceful.py``, which writes every answer it was given to a file;
``--driver threads`` uses client threads here instead), of

- idempotent writes: ``POST /api/v1/workspaces`` with an ``Idempotency-Key``;
- pixel events: ``POST /api/v1/pixel/track``, each with its own page path;
- webhook publishes: ``POST /api/v1/events`` (each event is queued for the endpoint);

sends SIGTERM to the server (its main process, as an orchestrator does; ``--signal-group``
sends it to every process of the group, as systemd does) while the load runs, waits for
it to exit, starts it again on the same database and port, and counts:

- every write answered 2xx is stored (the workspace exists);
- every pixel event answered ``200 {"tracked": true}`` is stored (its path is in
  ``pixel_events``);
- every event accepted (202) reaches the receiver (at least once), within
  ``--deliver-within`` seconds of the restart (the receiver takes ``--receiver-delay``
  per delivery, so deliveries are queued and in flight when the signal comes: their
  leases must be given back, or they would wait for the lease to expire);
- no delivery is still leased once the server has stopped (checked before the restart);
- metered usage is not lost: ``api_calls`` at least the authenticated 2xx answers,
  ``pixel_events`` at least the tracked events (both counted in memory, flushed on stop).

Requests refused or cut while the server stops (connection errors, 503) are counted and
reported, not lost: the client was not told they succeeded. Prints the counts as JSON and
exits 1 on any loss. Loopback only; bounded in time; cleans up its database and keys.

    python -m benchmarks.graceful_stop --seconds 6 --stop-after 3 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from . import common

BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
SITE = "graceful.example"
LOCUSTFILE = Path(__file__).resolve().parent / "locust_graceful.py"


@dataclass
class Tally:
    """What the clients were told, per kind."""

    writes_ok: set[str] = field(default_factory=set)  # workspace names answered 2xx
    pixel_ok: set[str] = field(default_factory=set)  # paths answered tracked
    events_ok: set[str] = field(default_factory=set)  # evt_ ids answered 202
    refused: dict[str, int] = field(default_factory=dict)  # kind:status -> count
    errors: dict[str, int] = field(default_factory=dict)  # kind:error -> count
    sent: int = 0

    def bump(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


class Receiver:
    """A loopback webhook receiver (aiohttp, its own thread): records each event id."""

    def __init__(self, delay: float = 0.0) -> None:
        self.port = common.free_port()
        self.delay = delay  # seconds per delivery: deliveries are in flight at the stop
        self.received: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        with contextlib.suppress(ValueError):
            event_id = json.loads(body).get("id") or request.headers.get("webhook-id", "")
            self.received[event_id] = self.received.get(event_id, 0) + 1
        return web.json_response({"received": True})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, common.HOST, self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        fut = asyncio.run_coroutine_threadsafe(close(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(1)  # a daemon thread: whatever is left ends with the process
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(1)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _setup(base: str, key: str, hook_url: str) -> None:
    with httpx.Client(base_url=base, headers=_auth(key), timeout=10) as client:
        made = client.post("/api/v1/webhooks", json={"url": hook_url, "events": ["graceful.*"]})
        assert made.status_code == 201, made.text
        site = client.post("/api/v1/pixel/sites", json={"domain": SITE})
        assert site.status_code == 201, site.text


def _one(client: httpx.Client, kind: str, n: str, tally: Tally, key: str) -> None:
    tally.sent += 1
    try:
        if kind == "write":
            name = f"graceful {n}"
            resp = client.post(
                "/api/v1/workspaces",
                json={"name": name},
                headers={**_auth(key), "Idempotency-Key": f"graceful-{n}"},
            )
            if 200 <= resp.status_code < 300:
                tally.writes_ok.add(name)
                return
        elif kind == "pixel":
            path = f"/graceful/{n}"
            resp = client.post(
                "/api/v1/pixel/track",
                content=json.dumps({"url": f"https://{SITE}{path}"}),
                headers={"Content-Type": "text/plain", "User-Agent": BROWSER_UA},
            )
            if resp.status_code == 200 and resp.json().get("tracked") is True:
                tally.pixel_ok.add(path)
                return
        else:
            resp = client.post(
                "/api/v1/events",
                json={"type": "graceful.tested", "data": {"n": n}},
                headers=_auth(key),
            )
            if resp.status_code == 202:
                tally.events_ok.add(resp.json()["data"]["id"])
                return
        tally.bump(tally.refused, f"{kind}:{resp.status_code}")
    except httpx.HTTPError as exc:
        tally.bump(tally.errors, f"{kind}:{type(exc).__name__}")


def _load(base: str, key: str, stop: threading.Event, tally: Tally, worker: int) -> None:
    kinds = ("write", "pixel", "event")
    i = 0
    # New connections now and then, so both workers take requests and a stop is met by
    # clients both mid-connection and connecting.
    while not stop.is_set():
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(20):
                if stop.is_set():
                    break
                _one(client, kinds[i % 3], f"{worker}-{i}", tally, key)
                i += 1
                if tally.errors or tally.refused:
                    time.sleep(0.005)  # the server is going or gone: do not spin


class _Load:
    """The load: locust users in their own process (``--driver locust``, what the issue
    asks for), or client threads here (``--driver threads``). Either way, the result is a
    Tally of what the clients were told."""

    def __init__(self, opts: argparse.Namespace, base: str, key: str, work: Any) -> None:
        self.opts, self.base, self.key = opts, base, key
        self.tally = Tally()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.accepted_file = os.path.join(str(work), "accepted.jsonl")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(str(work), "locust.log")

    def start(self) -> None:
        if self.opts.driver == "threads":
            self.threads = [
                threading.Thread(
                    target=_load, args=(self.base, self.key, self.stop_event, self.tally, n)
                )
                for n in range(self.opts.concurrency)
            ]
            for thread in self.threads:
                thread.start()
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORE_API_")}
        env.update(
            {
                "BENCH_KEY": self.key,
                "BENCH_ACCEPTED_FILE": self.accepted_file,
                "BENCH_PIXEL_SITE": SITE,
            }
        )
        users = str(self.opts.concurrency)
        argv = [
            str(Path(sys.executable).with_name("locust")), "-f", str(LOCUSTFILE), "--headless",
            "-u", users, "-r", users, "--run-time", f"{round(self.opts.seconds) + 60}s",
            "--stop-timeout", "5", "-H", self.base, "--only-summary", "--loglevel", "WARNING",
            "GracefulUser",
        ]  # fmt: skip
        with open(self.log_path, "w") as logf:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=str(common.ROOT), stdout=logf, stderr=subprocess.STDOUT
            )

    def wait_running(self, within: float = 30.0) -> None:
        """Locust takes a second or more to start its users: the time to the signal counts
        from the first accepted answer of every kind, not from the process start."""
        deadline = time.monotonic() + within
        while self.proc is not None and time.monotonic() < deadline:
            tally = self._read()
            if tally.writes_ok and tally.pixel_ok and tally.events_ok:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if self.proc is not None:
            raise RuntimeError(f"locust did not get going; see {self.log_path}")

    def _read(self) -> Tally:
        tally = Tally()
        if not os.path.exists(self.accepted_file):
            return tally
        with open(self.accepted_file) as f:
            lines = [json.loads(line) for line in f if line.endswith("\n")]
        sets = {"write": tally.writes_ok, "pixel": tally.pixel_ok, "event": tally.events_ok}
        for line in lines:
            tally.sent += 1
            if "id" in line:
                sets[line["kind"]].add(line["id"])
            else:
                tally.bump(tally.refused, f"{line['kind']}:{line['refused']}")
        return tally

    def accepted_so_far(self) -> int:
        tally = self.tally if self.proc is None else self._read()
        return len(tally.writes_ok) + len(tally.pixel_ok) + len(tally.events_ok)

    def finish(self) -> Tally:
        if self.proc is None:
            self.stop_event.set()
            for thread in self.threads:
                thread.join(30)
            return self.tally
        self.proc.terminate()  # locust's run time is only a cap: the load ends here
        code = self.proc.wait(timeout=60)
        if code not in (0, 1):  # 1: locust saw failures (the stop's refusals), expected
            with open(self.log_path) as f:
                raise RuntimeError(f"locust exited {code}:\n{f.read()[-2000:]}")
        return self._read()


def _wait_exit(server: common.Server, within: float) -> int | None:
    assert server.proc is not None
    try:
        return server.proc.wait(timeout=within)
    except Exception:
        return None


def _leases_held(db_url: str) -> dict[str, int]:
    """After the stop, before the restart: undelivered deliveries and how many of them a
    lease still holds (a stopped worker that gave its leases back holds none; a held one
    would wait for CORE_API_WEBHOOK_LEASE_SECONDS before anyone sends it)."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE locked_until > %s) FROM webhook_deliveries "
            "WHERE status IN ('pending', 'retrying')",
            (int(time.time() * 1000),),
        ).fetchone()
    assert row is not None
    return {"undelivered_after_stop": int(row[0]), "leases_still_held_after_stop": int(row[1])}


def _stored(db_url: str, tally: Tally, workspace_id: int) -> dict[str, int]:
    import psycopg

    with psycopg.connect(db_url) as conn:
        usage = dict(
            conn.execute(
                "SELECT feature, SUM(used) FROM entitlement_usage WHERE workspace_id = %s "
                "GROUP BY feature",
                (workspace_id,),
            ).fetchall()
        )
        names = {
            r[0] for r in conn.execute("SELECT name FROM workspaces WHERE name LIKE 'graceful %'")
        }
        paths = {
            r[0]
            for r in conn.execute("SELECT path FROM pixel_events WHERE path LIKE '/graceful/%'")
        }
    # Metered usage (counted in memory, flushed every 2 s and on a graceful stop): at least
    # one api_call per authenticated 2xx (2 set-up requests), one pixel_event per tracked
    # event (more when an answer was cut after the count).
    answered = len(tally.writes_ok) + len(tally.events_ok) + 2
    api_calls, pixel_events = int(usage.get("api_calls", 0)), int(usage.get("pixel_events", 0))
    return {
        "usage_api_calls_metered": api_calls,
        "usage_api_calls_lost": max(0, answered - api_calls),
        "usage_pixel_events_metered": pixel_events,
        "usage_pixel_events_lost": max(0, len(tally.pixel_ok) - pixel_events),
        "writes_lost": len(tally.writes_ok - names),
        "pixel_lost": len(tally.pixel_ok - paths),
        "writes_stored": len(names),
        "pixel_stored": len(paths),
    }


def run(opts: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver(opts.receiver_delay)
    receiver.start()
    with common.workdir("core-api-graceful-") as work:
        store = common.postgres_redis_store(work)
        try:
            env = store.env
            env.update(
                {
                    "CORE_API_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
                    "CORE_API_WEBHOOK_REQUIRE_HTTPS": "false",
                    "CORE_API_PIXEL_RATE_LIMIT": "0",
                    # Pixel events wait up to a minute for their write (the load stays
                    # far below a batch): at the signal, every one accepted is in memory.
                    "CORE_API_PIXEL_FLUSH_MS": "60000",
                    "CORE_API_AUTH_FAILURE_LIMIT": "0",
                    "CORE_API_LOG_LEVEL": "INFO",
                }
            )
            t0 = time.monotonic()
            creds = common.bootstrap(env, "graceful", common.BENCH_TIER)
            common.log(f"[graceful] bootstrap {time.monotonic() - t0:.1f}s")
            server = common.service_server(store, work, workers=opts.workers)
            server.start()
            server.wait_ready("/readyz", {})
            common.log(f"[graceful] server ready {time.monotonic() - t0:.1f}s")
            base = f"http://{common.HOST}:{server.port}"
            _setup(base, creds.key, f"http://{common.HOST}:{receiver.port}/hook")
            load = _Load(opts, base, creds.key, work)
            started = time.monotonic()
            load.start()
            load.wait_running()
            time.sleep(opts.stop_after)
            accepted_before = load.accepted_so_far()
            assert server.proc is not None
            signalled = time.monotonic()
            if opts.signal_group:
                os.killpg(server.proc.pid, signal.SIGTERM)
            else:
                os.kill(server.proc.pid, signal.SIGTERM)
            code = _wait_exit(server, opts.exit_within)
            stopped_in = time.monotonic() - signalled
            common.log(f"[graceful] stopped {stopped_in:.1f}s after SIGTERM (exit {code})")
            time.sleep(max(0.0, opts.seconds - (time.monotonic() - started)))
            tally = load.finish()
            common.log(f"[graceful] load stopped {time.monotonic() - t0:.1f}s")
            log_before = server.tail(200)
            leases = _leases_held(env["CORE_API_DATABASE_URL"])  # the stopped server's
            server.stop()  # whatever did not exit (a failure, reported below)
            # The same database, port and shared memory: a restart.
            server.start()
            server.wait_ready("/readyz", {})
            common.log(f"[graceful] restarted {time.monotonic() - t0:.1f}s")
            undelivered_at_restart = len(tally.events_ok - set(receiver.received))
            restarted = time.monotonic()
            deadline = restarted + opts.deliver_within
            while time.monotonic() < deadline and not tally.events_ok <= set(receiver.received):
                time.sleep(0.1)
            delivered_in = time.monotonic() - restarted
            delivered = tally.events_ok & set(receiver.received)
            stored = _stored(env["CORE_API_DATABASE_URL"], tally, creds.workspace_id)
            # Counted: the restarted server and its database go now (no need to wait for a
            # worker that may still be starting).
            assert server.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGKILL)
            server.stop()
            result = {
                "workers": opts.workers,
                "signal": "group" if opts.signal_group else "main process",
                "driver": opts.driver,
                "exit_code": code,
                "stopped_in_s": round(stopped_in, 2),
                "requests_sent": tally.sent,
                "accepted_before_signal": accepted_before,
                "writes_accepted": len(tally.writes_ok),
                "pixel_accepted": len(tally.pixel_ok),
                "events_accepted": len(tally.events_ok),
                **stored,
                **leases,
                "events_undelivered_at_restart": undelivered_at_restart,
                "events_delivered": len(delivered),
                "rest_delivered_in_s": round(delivered_in, 2),
                "events_lost": len(tally.events_ok - delivered),
                "duplicate_deliveries": sum(n - 1 for n in receiver.received.values() if n > 1),
                "refused": tally.refused,
                "connection_errors": tally.errors,
            }
            if code is None:
                result["server_log_tail"] = log_before[-3000:]
            return result
        finally:
            t1 = time.monotonic()
            store.close()
            receiver.stop()
            common.log(f"[graceful] cleaned up in {time.monotonic() - t1:.1f}s")


def losses(result: dict[str, Any]) -> int:
    return int(
        result["writes_lost"]
        + result["pixel_lost"]
        + result["events_lost"]
        + result["usage_api_calls_lost"]
        + result["usage_pixel_events_lost"]
        + result["leases_still_held_after_stop"]  # not lost, but late: the stop failed
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.graceful_stop", description=__doc__)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8, help="locust users or client threads")
    p.add_argument(
        "--driver",
        choices=("locust", "threads"),
        default="locust",
        help="the load generator: locust users in a subprocess, or client threads here",
    )
    p.add_argument("--seconds", type=float, default=8.0, help="load duration in all")
    p.add_argument("--stop-after", type=float, default=4.0, help="seconds of load before SIGTERM")
    p.add_argument("--exit-within", type=float, default=60.0, help="seconds the stop may take")
    p.add_argument("--deliver-within", type=float, default=60.0, help="seconds after the restart")
    p.add_argument(
        "--receiver-delay",
        type=float,
        default=0.02,
        help="seconds the receiver takes per delivery (deliveries in flight at the stop)",
    )
    p.add_argument(
        "--signal-group",
        action="store_true",
        help="SIGTERM every process of the server's group (systemd), not only the main one",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    result = run(opts)
    print(json.dumps(result, indent=2))
    lost = losses(result)
    if lost or result["exit_code"] is None:
        print(f"graceful stop: {lost} accepted item(s) lost", file=sys.stderr)
        return 1
    print("graceful stop: nothing accepted was lost", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
