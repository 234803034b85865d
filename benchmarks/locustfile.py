"""Locust scenarios (FastHttpUser) for realistic mixes against a running core-api.

Select a scenario by user class (``locust -f benchmarks/locustfile.py ReadUser``) or by tag
(``--tags reads``). ``benchmarks/locust_run.py`` starts a service, bootstraps keys and runs
these headless; to run them by hand against your own server::

    BENCH_KEY=sk_live_... BENCH_WORKSPACE_ID=1 BENCH_FREE_KEY=sk_live_... \\
    locust -f benchmarks/locustfile.py --headless -u 20 -r 20 --run-time 10s \\
        -H http://127.0.0.1:8000 ReadUser

Environment:

- ``BENCH_KEY``: a ``*`` key whose tier will not refuse during the run;
- ``BENCH_WORKSPACE_ID``: that key's workspace;
- ``BENCH_FREE_KEY``, ``BENCH_FREE_WORKSPACE_ID``: a free-tier key (60/min, no burst) and
  its workspace, for the saturation scenario;
- ``BENCH_USER_RPS``: the paced request rate of each read/write user (default 10/s);
- ``BENCH_STATUS_FILE``: where to write per-endpoint status-code counts as JSON on exit.

Outcomes that are expected, not failures: 429 in the saturation scenario (with
``Retry-After``); 404 and 429 from ``/api/v1/pixel/config`` (the pixel endpoints are not
built yet, and pixel traffic is limited per client IP). Writes send an ``Idempotency-Key``
and sometimes replay one; they still pass if the server ignores the header.
"""

from __future__ import annotations

import array
import collections
import contextlib
import gc
import itertools
import json
import math
import os
import random
import time
import uuid
from typing import Any

import gevent
from locust import FastHttpUser, between, constant, events, tag, task

# The load generator's own garbage collections pause every user at once (locust runs them
# all on one thread) and read as server latency: with 200 users, full collections of
# locust's heap added tens of ms to the mixed load's p99. Collect rarely, never the
# start-up heap (as the service does, core_api/gctune.py), and report the pauses left.
gc.collect()
gc.freeze()
gc.set_threshold(50_000, 20, 20)
GC_PAUSES: dict[str, float] = {"collections": 0, "total_ms": 0.0, "max_ms": 0.0}
_gc_started = 0.0


def _time_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    pause = (time.perf_counter() - _gc_started) * 1000
    GC_PAUSES["collections"] += 1
    GC_PAUSES["total_ms"] = round(GC_PAUSES["total_ms"] + pause, 2)
    GC_PAUSES["max_ms"] = round(max(GC_PAUSES["max_ms"], pause), 2)


gc.callbacks.append(_time_gc)

KEY = os.environ.get("BENCH_KEY", "")
FREE_KEY = os.environ.get("BENCH_FREE_KEY", "")
WORKSPACE_ID = os.environ.get("BENCH_WORKSPACE_ID", "1")
USER_RPS = float(os.environ.get("BENCH_USER_RPS", "10"))
REPLAY_RATE = float(os.environ.get("BENCH_REPLAY_RATE", "0.1"))

WORKSPACE = "GET /api/v1/workspaces/{id}"
API_KEYS = "GET /api/v1/api-keys"
CREATE = "POST /api/v1/workspaces"
REPLAY = "POST /api/v1/workspaces (replayed key)"
PIXEL = "GET /api/v1/pixel/config"
SATURATE = "GET /api/v1/workspaces/{id} (free tier)"

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

# --------------------------------------------------------------------------- status counts

STATUS: collections.defaultdict[str, collections.Counter[str]] = collections.defaultdict(
    collections.Counter
)
EXTRA: collections.Counter[str] = collections.Counter()


# Every request's end time and latency (ms), for p99 per time window (drift): a float pair
# is 16 bytes, so 5 minutes at 1,500 req/s is about 7 MB.
TIMES = array.array("d")
LATENCIES = array.array("d")
NAMES = array.array("H")  # index into NAME_LIST: drift per endpoint
NAME_IDS: dict[str, int] = {}
NAME_LIST: list[str] = []


@events.request.add_listener
def _count_status(
    name: str, response_time: float = 0.0, response: Any = None, exception: Any = None, **_: Any
) -> None:
    code = getattr(response, "status_code", None)
    STATUS[name][str(code) if code else type(exception).__name__ if exception else "none"] += 1
    TIMES.append(time.monotonic())
    LATENCIES.append(response_time)
    name_id = NAME_IDS.get(name)
    if name_id is None:
        name_id = NAME_IDS[name] = len(NAME_LIST)
        NAME_LIST.append(name)
    NAMES.append(name_id)


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)], 2)


def timeline(window_s: float = 60.0, step_s: float = 10.0) -> dict[str, Any]:
    """p99 over the first and the last ``window_s`` of the run (shortened to a third of the
    run when it is shorter than three windows), plus p99 per ``step_s`` bucket."""
    if not TIMES:
        return {}
    start, end = TIMES[0], TIMES[-1]
    span = max(end - start, 1e-6)
    window = min(window_s, span / 3)
    first = [lat for t, lat in zip(TIMES, LATENCIES, strict=True) if t < start + window]
    last = [lat for t, lat in zip(TIMES, LATENCIES, strict=True) if t >= end - window]
    buckets: dict[int, list[float]] = collections.defaultdict(list)
    for t, lat in zip(TIMES, LATENCIES, strict=True):
        buckets[int((t - start) // step_s)].append(lat)
    by_name: dict[str, dict[str, list[float]]] = {
        name: {"first": [], "last": []} for name in NAME_LIST
    }
    for t, lat, name_id in zip(TIMES, LATENCIES, NAMES, strict=True):
        if t < start + window:
            by_name[NAME_LIST[name_id]]["first"].append(lat)
        elif t >= end - window:
            by_name[NAME_LIST[name_id]]["last"].append(lat)
    return {
        "requests": len(TIMES),
        "span_s": round(span, 1),
        # which endpoints drift: p99 over the first and the last window, per endpoint
        "p99_first_last_by_name_ms": {
            name: [_p99(w["first"]), _p99(w["last"])] for name, w in by_name.items()
        },
        "rps": round(len(TIMES) / span, 1),
        "window_s": round(window, 1),
        "p99_first_ms": _p99(first),
        "p99_last_ms": _p99(last),
        "p99_all_ms": _p99(list(LATENCIES)),
        "p99_per_bucket_ms": [_p99(buckets[i]) for i in sorted(buckets)],
        "bucket_s": step_s,
    }


def _entry(entry: Any) -> dict[str, Any]:
    pct = entry.get_response_time_percentile
    return {
        "type": entry.method or "",
        "name": entry.name,
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "rps": round(entry.total_rps, 1),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(entry.max_response_time or 0.0, 1),
    }


@events.quitting.add_listener
def _write_status(environment: Any, **_: Any) -> None:
    """Status counts plus the final stats (locust's last CSV write can lag by a second)."""
    path = os.environ.get("BENCH_STATUS_FILE")
    if not path:
        return
    stats = environment.stats
    data = {
        "status": {k: dict(v) for k, v in STATUS.items()},
        "extra": dict(EXTRA),
        "load_generator_gc": GC_PAUSES,
        "endpoints": [_entry(e) for e in stats.entries.values()],
        "aggregate": _entry(stats.total),
        "timeline": timeline(),
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def paced(rate: float) -> Any:
    """A wait time that runs the user's tasks ``rate`` times a second, at a random phase.

    locust's ``constant_throughput`` paces each user from the moment it was spawned, and
    ``-r N`` spawns all N users within a few milliseconds, so they stay in step: 200 users
    at 1.5 req/s sent 200 requests at once every 667 ms. Each burst queued at the server
    and read as 30-40 ms latency at only 300 req/s (about 0.2 ms per user, whatever the
    rate), while a client arriving at random times saw 1 ms. A random sleep in
    ``on_start`` does not help either: ``constant_throughput`` subtracts it from the first
    wait. Here each user waits a random fraction of its period before its first task
    (``stagger``), then keeps a fixed schedule from there; a late task does not make the
    next ones bunch up to catch up."""
    period = 1.0 / rate

    def wait(user: Any) -> float:
        now = time.perf_counter()
        due = max(getattr(user, "_paced_due", now) + period, now)
        user._paced_due = due
        return due - now

    wait.period = period  # type: ignore[attr-defined]
    return wait


def stagger(user: Any) -> None:
    """Start the user at a random point of its period (see ``paced``)."""
    delay = random.uniform(0.0, type(user).wait_time.period)
    gevent.sleep(delay)
    user._paced_due = time.perf_counter()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Accept": "application/json"}


def _has_rate_headers(resp: Any) -> bool:
    return all(resp.headers.get(h) is not None for h in RATE_HEADERS)


# --------------------------------------------------------------------------- scenarios


class ReadUser(FastHttpUser):
    """Authenticated reads: the workspace (3 in 4) and the key list (1 in 4)."""

    wait_time = paced(USER_RPS)
    weight = 6

    def on_start(self) -> None:
        stagger(self)

    @tag("reads")
    @task(3)
    def workspace(self) -> None:
        with self.client.get(
            f"/api/v1/workspaces/{WORKSPACE_ID}",
            headers=_auth(KEY),
            name=WORKSPACE,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif not _has_rate_headers(resp):
                resp.failure("missing X-RateLimit-* headers")

    @tag("reads")
    @task(1)
    def api_keys(self) -> None:
        with self.client.get(
            "/api/v1/api-keys", headers=_auth(KEY), name=API_KEYS, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")


class WriteUser(FastHttpUser):
    """Creates workspaces with a fresh Idempotency-Key; now and then replays a recent one.

    A replay sends the same key and body again: the contract is the first response again
    with ``Idempotent-Replayed: true`` (or 409 while the first is still in flight). Until
    idempotency exists the server creates a second workspace (201): still counted as a
    success, and the ``extra`` counts in the status file show which behaviour was seen.
    """

    wait_time = paced(max(USER_RPS / 2, 0.5))
    weight = 2

    def on_start(self) -> None:
        self.recent: list[tuple[str, dict[str, str]]] = []
        stagger(self)

    @tag("writes")
    @task
    def create(self) -> None:
        if self.recent and random.random() < REPLAY_RATE:
            key, body = random.choice(self.recent)
            name = REPLAY
        else:
            key, body = str(uuid.uuid4()), {"name": f"bench {uuid.uuid4().hex[:12]}"}
            name = CREATE
            self.recent = [*self.recent[-19:], (key, body)]
        headers = {**_auth(KEY), "Idempotency-Key": key, "Content-Type": "application/json"}
        with self.client.post(
            "/api/v1/workspaces",
            data=json.dumps(body),
            headers=headers,
            name=name,
            catch_response=True,
        ) as resp:
            replayed = (resp.headers.get("Idempotent-Replayed") or "").lower() == "true"
            if name == REPLAY:
                EXTRA["replay_marked_replayed" if replayed else "replay_not_marked"] += 1
                if resp.status_code in (201, 409):
                    resp.success()
                else:
                    resp.failure(f"replay status {resp.status_code}")
            elif resp.status_code == 201:
                resp.success()
            else:
                resp.failure(f"status {resp.status_code}")


class PixelUser(FastHttpUser):
    """Unauthenticated pixel bursts: 20 quick requests, then a pause.

    404 (not built yet) and 429 (per-IP pixel limit) are expected outcomes.
    """

    wait_time = between(0.5, 1.5)
    weight = 1

    @tag("pixel")
    @task
    def burst(self) -> None:
        for _ in range(20):
            with self.client.get(PIXEL.split()[1], name=PIXEL, catch_response=True) as resp:
                if resp.status_code in (200, 204, 404, 429):
                    resp.success()
                else:
                    resp.failure(f"status {resp.status_code}")


class SaturationUser(FastHttpUser):
    """A free-tier key (60/min, no burst) hammering until the limiter answers 429.

    200 and 429 are both expected; a 429 must carry ``Retry-After`` and the rate-limit
    headers, every answer the ``X-RateLimit-*`` headers.
    """

    wait_time = constant(0)
    weight = 1

    @tag("saturation")
    @task
    def hammer(self) -> None:
        with self.client.get(
            f"/api/v1/workspaces/{os.environ.get('BENCH_FREE_WORKSPACE_ID', WORKSPACE_ID)}",
            headers=_auth(FREE_KEY or KEY),
            name=SATURATE,
            catch_response=True,
        ) as resp:
            if resp.status_code == 429:
                if resp.headers.get("Retry-After") is None:
                    resp.failure("429 without Retry-After")
                elif not _has_rate_headers(resp):
                    resp.failure("429 without X-RateLimit-* headers")
                else:
                    resp.success()
            elif resp.status_code == 200:
                if _has_rate_headers(resp):
                    resp.success()
                else:
                    resp.failure("200 without X-RateLimit-* headers")
            else:
                resp.failure(f"status {resp.status_code}")


# --------------------------------------------------------------------------- mixed load

# Credentials of the seeded users (JSON list of {"key", "workspace_id", ...}); each locust
# user takes the next one, so writes spread over as many users as there are locust users.
USERS: list[dict[str, Any]] = []
if os.environ.get("BENCH_USERS_FILE"):
    with open(os.environ["BENCH_USERS_FILE"]) as _f:
        USERS = json.load(_f)
_NEXT_USER = itertools.count()
# Large-tenant scenario: the range of workspace ids the single user is a member of.
TENANT_IDS = [int(x) for x in os.environ.get("BENCH_TENANT_IDS", "").split("-") if x]
MIX_LIST_WS = "GET /api/v1/workspaces"


class MixUser(FastHttpUser):
    """The mix, one seeded user per locust user: 40 % GET /workspaces/{id} (the home
    workspace or one it created), 20 % list workspaces, 20 % list API keys, 15 % POST
    /workspaces with an Idempotency-Key (10 % of them replays of one of its last 20), 5 %
    GET /pixel/config. The pace comes from ``BENCH_USER_RPS`` (``paced``)."""

    wait_time = paced(USER_RPS)

    def on_start(self) -> None:
        me = USERS[next(_NEXT_USER) % len(USERS)] if USERS else {}
        self.headers = _auth(me.get("key", KEY))
        self.ids = [int(me.get("workspace_id", WORKSPACE_ID))]
        self.recent: list[tuple[str, str]] = []
        stagger(self)

    def _check(self, resp: Any, ok: tuple[int, ...] = (200,)) -> None:
        if resp.status_code in ok:
            resp.success()
        else:
            resp.failure(f"status {resp.status_code}")

    @task(40)
    def workspace(self) -> None:
        if TENANT_IDS:
            wid = random.randint(TENANT_IDS[0], TENANT_IDS[-1])
        else:
            wid = random.choice(self.ids)
        with self.client.get(
            f"/api/v1/workspaces/{wid}", headers=self.headers, name=WORKSPACE, catch_response=True
        ) as resp:
            self._check(resp)

    @task(20)
    def list_workspaces(self) -> None:
        with self.client.get(
            "/api/v1/workspaces?per_page=25", headers=self.headers, name=MIX_LIST_WS,
            catch_response=True,
        ) as resp:  # fmt: skip
            self._check(resp)

    @task(20)
    def list_keys(self) -> None:
        with self.client.get(
            "/api/v1/api-keys?per_page=25", headers=self.headers, name=API_KEYS,
            catch_response=True,
        ) as resp:  # fmt: skip
            self._check(resp)

    @task(15)
    def create(self) -> None:
        if self.recent and random.random() < REPLAY_RATE:
            key, body = random.choice(self.recent)
            name = REPLAY
        else:
            key = str(uuid.uuid4())
            body = json.dumps({"name": f"mix {uuid.uuid4().hex[:12]}"})
            name = CREATE
            self.recent = [*self.recent[-19:], (key, body)]
        headers = {**self.headers, "Idempotency-Key": key, "Content-Type": "application/json"}
        with self.client.post(
            "/api/v1/workspaces", data=body, headers=headers, name=name, catch_response=True
        ) as resp:
            if name == REPLAY:
                replayed = (resp.headers.get("Idempotent-Replayed") or "").lower() == "true"
                EXTRA["replay_marked_replayed" if replayed else "replay_not_marked"] += 1
                self._check(resp, (201, 409))
            else:
                self._check(resp, (201,))
                if resp.status_code == 201 and not TENANT_IDS:
                    with contextlib.suppress(Exception):
                        self.ids.append(int(resp.json()["data"]["id"]))

    @task(5)
    def pixel(self) -> None:
        # the runner lifts the per-IP pixel limit: all load comes from one loopback address
        with self.client.get(PIXEL.split()[1], name=PIXEL, catch_response=True) as resp:
            self._check(resp)


# --------------------------------------------------------------------------- capacity mix

CAP_PIXEL_ORIGIN = os.environ.get("BENCH_PIXEL_ORIGIN", "https://capacity.example")
CAP_TRACK = "POST /api/v1/pixel/track (burst of 4)"
CAP_USAGE = "POST /api/v1/entitlements/usage"
CAP_EVENT = "POST /api/v1/events"
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)


class CapacityUser(FastHttpUser):
    """The operations mix of ``benchmarks/capacity.py``, per 100 requests: 30 GET
    /workspaces/{id}, 10 list workspaces, 10 list API keys, 10 idempotent POST /workspaces
    (10 % replays), 20 pixel hits (bursts of 4, as a page and its events), 15 usage records
    (each with its own event_id) and 5 event publishes that fan out to a webhook endpoint of
    the user's workspace (delivered to a loopback receiver by the serving processes)."""

    wait_time = paced(USER_RPS)
    on_start = MixUser.on_start
    _check = MixUser._check
    tasks = {  # MixUser's own tasks (not inherited: the pixel config read is not in this mix)
        MixUser.workspace: 30,
        MixUser.list_workspaces: 10,
        MixUser.list_keys: 10,
        MixUser.create: 10,
    }

    def _post_json(self, path: str, body: dict[str, Any], name: str, ok: tuple[int, ...]) -> None:
        headers = {**self.headers, "Content-Type": "application/json"}
        with self.client.post(
            path, data=json.dumps(body), headers=headers, name=name, catch_response=True
        ) as resp:
            self._check(resp, ok)

    @task(5)
    def pixel_burst(self) -> None:
        headers = {
            "Content-Type": "text/plain",
            "Origin": CAP_PIXEL_ORIGIN,
            "User-Agent": CHROME_UA,
            "X-Forwarded-For": f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.9",
        }
        page = f"{CAP_PIXEL_ORIGIN}/p/{random.randint(1, 500)}"
        for name in ("pageview", "pageview", "signup", "click"):
            body = json.dumps({"event": name, "url": page, "properties": {"plan": "pro"}})
            with self.client.post(
                "/api/v1/pixel/track", data=body, headers=headers, name=CAP_TRACK,
                catch_response=True,
            ) as resp:  # fmt: skip
                self._check(resp)

    @task(15)
    def usage(self) -> None:
        body = {"feature": "posts", "quantity": 1, "event_id": uuid.uuid4().hex}
        self._post_json("/api/v1/entitlements/usage", body, CAP_USAGE, (200,))

    @task(5)
    def publish(self) -> None:
        body = {"type": "post.created", "data": {"post": {"id": random.randint(1, 10**9)}}}
        self._post_json("/api/v1/events", body, CAP_EVENT, (202,))
