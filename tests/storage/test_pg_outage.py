"""PostgreSQL going away: a documented 503 with Retry-After within the connect timeout,
nothing half-committed, and the very first request after it is back succeeds.

The outage is a TCP proxy in front of the shared server that the test cuts and restores;
the shared PostgreSQL itself is never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import psycopg
import pytest

from conftest import ADMIN_URL, Api, Result, make_settings, open_app
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.runtime import Runtime
from core_api.storage import DatabaseUnavailable, Timeouts, open_database
from core_api.storage.migrate import migrate
from support import (
    Launcher,
    Server,
    children,
    clean_env,
    free_port,
    fresh_connection_client,
    fresh_database,
    hook_receiver,
    printed_key,
)

pytestmark = pytest.mark.postgres

BOUND_S = 10.0  # far below the 30 s hang of the finding; fail-fast answers come in < 3 s
HEALTH = "/health"
WORKSPACES = "/api/v1/workspaces"


class CuttableProxy:
    """A TCP proxy on a free loopback port, on its own thread and event loop.

    ``cut()`` closes every proxied connection and stops listening (new connections are
    refused), as a PostgreSQL restart looks to a client; ``restore()`` listens again.
    ``drop_on_next_send()`` makes each current connection close, unforwarded, when the
    client next sends: a connection that looks idle and healthy but is already gone.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._pairs: dict[asyncio.StreamWriter, asyncio.StreamWriter] = {}
        self._doomed: set[asyncio.StreamWriter] = set()
        self._thread.start()
        self.restore()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def url(self, database_url: str) -> str:
        info = psycopg.conninfo.conninfo_to_dict(database_url)
        user = info.get("user")
        auth = f"{user}@" if user else ""
        return f"postgresql://{auth}127.0.0.1:{self.port}/{info['dbname']}"

    def restore(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

        self._call(listen())

    def cut(self) -> None:
        async def cut() -> None:
            assert self._server is not None
            self._server.close()
            for client, upstream in list(self._pairs.items()):
                client.transport.abort()
                upstream.transport.abort()
            self._pairs.clear()

        self._call(cut())

    def drop_on_next_send(self) -> int:
        async def doom() -> int:
            self._doomed.update(self._pairs)
            return len(self._pairs)

        return int(self._call(doom()))

    def stop(self) -> None:
        """Close every connection, the listener, the tasks still piping and then the loop
        itself (an unclosed loop leaks its self-pipe socket pair)."""
        with contextlib.suppress(Exception):
            self.cut()

        async def finish() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(finish())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._pairs[writer] = up_writer
        await asyncio.gather(
            self._pipe(reader, up_writer, writer), self._pipe(up_reader, writer, writer)
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, client: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await source.read(65536):
                if client in self._doomed:
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            upstream = self._pairs.pop(client, None)
            self._doomed.discard(client)
            client.transport.abort()
            if upstream is not None:
                upstream.transport.abort()


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    server = CuttableProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432))))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def outage_db() -> Iterator[str]:
    """One database for this module's tests; each writes rows with names of its own."""
    with fresh_database("outage") as url:
        yield url


def count_workspaces(url: str, name: str) -> int:
    """Read straight from the server, not through the proxy or the app."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM workspaces WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


async def timed(call: Any) -> tuple[Result, float]:
    started = time.monotonic()
    async with asyncio.timeout(BOUND_S):
        result = await call
    return result, time.monotonic() - started


def assert_unavailable(result: Result) -> None:
    assert result.status == 503, result.json
    assert result.header("Retry-After") == "5"
    body = result.json
    assert set(body) == {"error", "message", "retry_after", "request_id"}, body
    assert body["error"] == "service_unavailable"
    assert body["retry_after"] == 5
    assert body["request_id"] == result.header("X-Request-ID")
    assert "PostgreSQL" not in body["message"]  # no internals in the body


@contextlib.asynccontextmanager
async def app_through(
    proxy: CuttableProxy, database_url: str, tmp_path: Path, tenant: str
) -> AsyncIterator[tuple[Runtime, Api, str]]:
    settings = make_settings(
        proxy.url(database_url), tmp_path, pg_connect_timeout=2, pg_pool_timeout=2
    )
    clock = ManualClock()
    runtime, app = await open_app(settings, clock)
    try:
        boot = await bootstrap(
            runtime.db,
            runtime.keys,
            runtime.plans,
            clock,
            name=tenant,
            tier="enterprise",
            email=None,
        )
        async with falcon.testing.ASGIConductor(app) as conductor:
            yield runtime, Api(conductor, boot["api_key"]["key"]), boot["api_key"]["key"]
    finally:
        await runtime.close()


async def test_outage_is_a_fast_documented_503_and_the_first_request_after_it_succeeds(
    proxy: CuttableProxy, outage_db: str, tmp_path: Path
) -> None:
    async with app_through(proxy, outage_db, tmp_path, "Outage") as (_, api, _key):
        # A second key, never used yet: during the outage its lookup misses the key cache.
        made = await api.post("/api/v1/api-keys", json={"name": "fresh", "scopes": ["*"]})
        assert made.status == 201, made.json
        fresh = made.json["data"]["key"]
        # Several pooled connections, all of which the cut will kill.
        warm = await asyncio.gather(*[api.get(WORKSPACES) for _ in range(6)])
        assert {r.status for r in warm} == {200}

        proxy.cut()
        health, _ = await timed(api.get(HEALTH, auth=False))
        assert_unavailable(health)
        uncached, _ = await timed(api.get(WORKSPACES, key=fresh))
        assert_unavailable(uncached)
        cached, _ = await timed(api.get(WORKSPACES, params={"search": "out"}))
        assert_unavailable(cached)  # the key is cached; a filtered page is never
        # A page read before the cut is still exact (no write can commit meanwhile): it is
        # served from the page cache.
        assert (await api.get(WORKSPACES)).status == 200
        during, _ = await timed(api.post(WORKSPACES, json={"name": "During the outage"}))
        assert_unavailable(during)
        assert (await api.get("/api/v1/pixel/config", auth=False)).status == 200  # no database

        proxy.restore()
        first, _ = await timed(api.get(HEALTH, auth=False))
        assert (first.status, first.json) == (200, {"status": "ok"})
        after = await api.post(WORKSPACES, json={"name": "After the outage"}, key=fresh)
        assert after.status == 201, after.json
        assert (await api.get(f"{WORKSPACES}/{after.json['data']['id']}")).status == 200

    assert count_workspaces(outage_db, "During the outage") == 0
    assert count_workspaces(outage_db, "After the outage") == 1


async def test_an_entitlement_check_needing_the_database_is_a_fast_503(
    proxy: CuttableProxy, outage_db: str, tmp_path: Path
) -> None:
    """The check's fast path (entitlements/fastpath.py) during a cut: a check whose usage
    is not cached answers the documented 503 fast, with its rate-limit headers and request
    id, and the first check after the restore reads the database again."""
    check = "/api/v1/entitlements/check"
    async with app_through(proxy, outage_db, tmp_path, "Checks") as (_, api, _key):
        assert (await api.get(check, params={"feature": "api_calls"})).status == 200
        proxy.cut()
        cold, _ = await timed(api.get(check, params={"feature": "storage"}))
        assert_unavailable(cold)
        assert cold.header("X-RateLimit-Limit")  # charged: the gateway's headers
        proxy.restore()
        after, _ = await timed(api.get(check, params={"feature": "storage"}))
        assert after.status == 200, after.json
        assert after.json["feature"] == "storage"


async def test_restart_between_requests_costs_no_failed_request(
    proxy: CuttableProxy, outage_db: str, tmp_path: Path
) -> None:
    """The finding: after a restart the first /health calls failed on dead pooled connections."""
    async with app_through(proxy, outage_db, tmp_path, "Restart") as (_, api, _key):
        warm = await asyncio.gather(*[api.get(WORKSPACES) for _ in range(8)])
        assert {r.status for r in warm} == {200}
        proxy.cut()
        proxy.restore()
        burst = await asyncio.gather(*[api.get(HEALTH, auth=False) for _ in range(8)])
        assert [r.status for r in burst] == [200] * 8


async def test_a_silently_dropped_connection_retries_reads_once_and_never_writes(
    proxy: CuttableProxy, outage_db: str
) -> None:
    db = await open_database(proxy.url(outage_db), 4, Timeouts(connect=2, checkout=2))
    try:
        await migrate(db)
        assert proxy.drop_on_next_send() >= 1
        assert await db.fetch_one("SELECT 1 AS ok") == {"ok": 1}  # retried on a new connection

        proxy.drop_on_next_send()
        with pytest.raises(DatabaseUnavailable):
            await db.execute(
                "INSERT INTO users (name, email, created_at, updated_at) VALUES (?, ?, 0, 0)",
                ("Dropped", None),
            )
        assert await db.fetch_all("SELECT id FROM users WHERE name = 'Dropped'") == []
    finally:
        await db.close()


async def test_a_transaction_cut_before_commit_leaves_nothing(
    proxy: CuttableProxy, outage_db: str
) -> None:
    db = await open_database(proxy.url(outage_db), 4, Timeouts(connect=2, checkout=2))
    try:
        await migrate(db)
        with pytest.raises(DatabaseUnavailable):
            async with db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO users (name, email, created_at, updated_at) VALUES (?, ?, 0, 0)",
                    ("Half", None),
                )
                proxy.cut()
        proxy.restore()
        assert await db.fetch_all("SELECT id FROM users WHERE name = 'Half'") == []
    finally:
        await db.close()


async def test_statement_timeout_is_a_503_not_a_hang(proxy: CuttableProxy, outage_db: str) -> None:
    db = await open_database(outage_db, 2, Timeouts(connect=2, statement=1, checkout=2))
    try:
        with pytest.raises(DatabaseUnavailable, match="statement timeout"):
            async with asyncio.timeout(BOUND_S):
                await db.fetch_one("SELECT pg_sleep(30)")
        assert await db.fetch_one("SELECT 1 AS ok") == {"ok": 1}
    finally:
        await db.close()


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def processes_connected_to(port: int, pids: list[int]) -> set[int]:
    """Which of ``pids`` hold an established TCP connection to loopback ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":
            inodes.add(f"socket:[{fields[9]}]")
    held = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if any(fd.readlink().name in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()):
                held.add(pid)
    return held


def outage_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    """A served process behind the proxy: fail-fast PostgreSQL timeouts, quiet logs."""
    return clean_env(
        tmp_path,
        database_url=database_url,
        secret_key="outage-secret-key-0123456789abcdefghij",
        log_level="ERROR",
        pg_connect_timeout="2",
        pg_pool_timeout="2",
        **extra,
    )


def wait_until_every_worker_started(server: Server, proxy: CuttableProxy, workers: int) -> None:
    """/health answers once the first worker is up; a worker still in its start-up when
    the database goes away exits (start-up needs the database), so wait for all of them:
    each holds a pooled connection through the proxy once started."""
    deadline = time.monotonic() + BOUND_S
    while len(processes_connected_to(proxy.port, descendants(server.proc.pid))) < workers:
        assert time.monotonic() < deadline, "workers did not all start"
        time.sleep(0.05)


@pytest.mark.e2e
def test_outage_over_a_real_server(
    proxy: CuttableProxy, launcher: Launcher, tmp_path: Path
) -> None:
    with fresh_database("outage_e2e") as url:
        env = outage_env(tmp_path, proxy.url(url))
        server = launcher.start(env, 2, "--first-run-bootstrap")
        wait_until_every_worker_started(server, proxy, 2)
        with fresh_connection_client(server, printed_key(server)) as client:
            assert client.get(WORKSPACES).status_code == 200
            proxy.cut()
            # A filtered list: the page cache serves only unfiltered pages read before.
            for path in (HEALTH, WORKSPACES + "?search=def"):
                started = time.monotonic()
                got = client.get(path)
                assert time.monotonic() - started < BOUND_S
                assert got.status_code == 503, got.text
                assert got.headers["retry-after"] == "5"
                assert got.json()["error"] == "service_unavailable"
            proxy.restore()
            # Every request after the restart succeeds, on whichever worker it lands.
            answers = [client.get(HEALTH) for _ in range(6)]
            assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
            created = client.post(WORKSPACES, json={"name": "After"})
            assert created.status_code == 201, created.text
        server.stop()  # before its database is dropped


@pytest.mark.e2e
def test_pixel_events_through_an_outage_are_kept_or_refused_never_lost(
    proxy: CuttableProxy, launcher: Launcher, tmp_path: Path
) -> None:
    """Pixel events over a real server while PostgreSQL goes away and comes back: every
    event answered 200 is stored exactly once (buffered while the database is down,
    written after), refusals are fast 503s with Retry-After, and tracking resumes. The
    events take the Rust gate's path (the site, agent and day are learnt first)."""
    with fresh_database("pixel_outage") as url:
        env = outage_env(tmp_path, proxy.url(url), pixel_flush_ms="100", pixel_rate_limit="0")
        server = launcher.start(env, 1, "--first-run-bootstrap")
        wait_until_every_worker_started(server, proxy, 1)
        answered: list[int] = []
        with fresh_connection_client(server, printed_key(server)) as client:
            made = client.post("/api/v1/pixel/sites", json={"domain": "example.com", "name": "x"})
            assert made.status_code == 201, made.text

            def track() -> int:
                body = b'{"url":"https://example.com/p%d"}' % len(answered)
                started = time.monotonic()
                got = client.post(
                    "/api/v1/pixel/track",
                    content=body,
                    headers={"Content-Type": "text/plain", "User-Agent": "Mozilla/5.0 Chrome/1"},
                )
                assert time.monotonic() - started < BOUND_S
                if got.status_code == 503:
                    assert got.headers["retry-after"] in ("1", "5"), got.text
                else:
                    assert got.status_code == 200 and got.json() == {"tracked": True}, got.text
                answered.append(got.status_code)
                return got.status_code

            assert [track() for _ in range(30)] == [200] * 30
            time.sleep(0.5)  # written: the cut below never meets a COPY in flight
            proxy.cut()
            deadline = time.monotonic() + 15
            while track() == 200:  # buffered until the writer finds the database gone
                assert time.monotonic() < deadline, "no 503 while the database is down"
                time.sleep(0.02)
            assert [track() for _ in range(5)] == [503] * 5
            proxy.restore()
            deadline = time.monotonic() + 30
            while track() != 200:  # the writer's next ping or write brings it back
                assert time.monotonic() < deadline, "tracking did not resume"
                time.sleep(0.1)
            assert [track() for _ in range(10)] == [200] * 10
        server.stop()  # graceful: the last batch is written
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*), count(DISTINCT path) FROM pixel_events").fetchone()
        assert row is not None
        kept = answered.count(200)
        assert answered.count(503) >= 5
        assert row == (kept, kept), (row, answered)


LEASE_S = 5


@pytest.mark.e2e
def test_webhook_deliveries_through_an_outage_all_arrive_and_none_stay_leased(
    proxy: CuttableProxy, launcher: Launcher, tmp_path: Path
) -> None:
    """Events published before PostgreSQL goes away (the embedded worker is claiming and
    recording outcomes, through the array statements) all reach a loopback receiver once
    it is back; publishes during the outage are fast 503s and store nothing; afterwards
    every delivery is ``success`` and no lease is left behind. A claim whose UPDATE
    committed as the connection was cut never came back to the worker: its rows wait for
    their lease (5 s here, 30 s by default), so the bound is the lease, not the restore."""
    with fresh_database("webhook_outage") as url, hook_receiver(delay=0.02) as hooks:
        env = outage_env(
            tmp_path,
            proxy.url(url),
            webhook_allow_private_networks="true",
            webhook_require_https="false",
            webhook_lease_seconds=str(LEASE_S),
        )
        server = launcher.start(env, 1, "--first-run-bootstrap")
        wait_until_every_worker_started(server, proxy, 1)
        accepted: list[str] = []
        with fresh_connection_client(server, printed_key(server)) as client:
            made = client.post("/api/v1/webhooks", json={"url": hooks.url, "events": ["o.*"]})
            assert made.status_code == 201, made.text
            for n in range(40):  # the bootstrap key's free tier: 60 a minute
                got = client.post("/api/v1/events", json={"type": "o.e", "data": {"n": n}})
                assert got.status_code == 202, got.text
                accepted.append(got.json()["data"]["id"])
            proxy.cut()  # deliveries are queued and in flight (20 ms each)
            started = time.monotonic()
            refused = client.post("/api/v1/events", json={"type": "o.e", "data": {"n": -1}})
            assert time.monotonic() - started < BOUND_S
            assert refused.status_code == 503, refused.text
            time.sleep(1.5)  # the worker meets the outage: claims and outcome writes fail
            proxy.restore()
            deadline = time.monotonic() + LEASE_S + BOUND_S
            while not set(accepted) <= set(hooks.received):
                assert time.monotonic() < deadline, len(set(hooks.received))
                time.sleep(0.1)
            with psycopg.connect(url) as conn:
                deadline = time.monotonic() + 30
                while True:  # the last outcomes are written in the next flush
                    row = conn.execute(
                        "SELECT count(*) FILTER (WHERE status = 'success'), count(*), "
                        "count(*) FILTER (WHERE locked_by IS NOT NULL) FROM webhook_deliveries"
                    ).fetchone()
                    if row == (40, 40, 0) or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                events = conn.execute("SELECT count(*) FROM events").fetchone()
        assert row == (40, 40, 0), row  # all delivered, all recorded, nothing leased
        assert events == (40,)  # the refused publish stored nothing
        server.stop()  # before its database is dropped
