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
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.webhook_baseline import bare_loop, receiver_process, sample_bodies

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


async def _fan_out_and_deliver(
    url: str,
    receiver_url: str,
    opts: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    from core_api.api_keys.service import bootstrap
    from core_api.config import Settings
    from core_api.events import publish
    from core_api.runtime import Runtime
    from core_api.webhooks.delivery import Dispatcher
    from core_api.webhooks.secrets import SecretBox
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
        workspace = boot["workspace"]["id"]
        found = await workspaces_repo.get_for_user(runtime.db, boot["user"]["id"], workspace)
        assert found is not None
        for n in range(opts.endpoints):
            await runtime.webhooks.create(found, f"{receiver_url}e{n}", ["*"], None)
        bodies = sample_bodies(opts.events, opts.body_bytes)
        datas = [json.loads(body)["data"] for body in bodies]

        started = time.perf_counter()
        for data in datas:
            async with runtime.db.transaction() as tx:
                await publish(
                    tx,
                    workspace_id=workspace,
                    type="post.created",
                    data=data,
                    now=runtime.clock.now_ms(),
                )
        fan_out_s = time.perf_counter() - started
        total = opts.events * opts.endpoints

        dispatcher = Dispatcher(
            runtime.db, runtime.clock, settings, runtime.events, SecretBox(settings.secret_key)
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        task = asyncio.create_task(dispatcher.run())
        done = 0
        while done < total:
            await asyncio.sleep(0.02)
            row = await runtime.db.fetch_one(
                "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'success'"
            )
            done = int(row["n"]) if row else 0
            if task.done():
                task.result()
            if time.perf_counter() - started > opts.timeout:
                break
        deliver_s = time.perf_counter() - started
        deliver_cpu = time.process_time() - cpu_started
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        counters = await runtime.db.fetch_one(
            "SELECT SUM(success_count) AS ok, SUM(failure_count) AS failed FROM webhook_endpoints"
        )
        attempts = await runtime.db.fetch_one("SELECT COUNT(*) AS n FROM webhook_attempts")
    finally:
        await runtime.close()
    return {
        "events": opts.events,
        "endpoints": opts.endpoints,
        "deliveries": total,
        "delivered": done,
        "fan_out_seconds": round(fan_out_s, 3),
        "events_per_second": round(opts.events / fan_out_s, 1),
        "deliveries_written_per_second": round(total / fan_out_s, 1),
        "delivery_seconds": round(deliver_s, 3),
        "deliveries_per_second": round(done / deliver_s, 1),
        # This process's CPU per delivery (claims, signing, HTTP, outcome writes; with
        # SQLite the database work too): 1e6 / it is the rate one idle core would reach.
        "cpu_us_per_delivery": round(deliver_cpu * 1e6 / max(done, 1), 1),
        "attempts_recorded": int(attempts["n"]) if attempts else 0,
        "success_count_sum": int(counters["ok"] or 0) if counters else 0,
        "failure_count_sum": int(counters["failed"] or 0) if counters else 0,
        "sent_by_worker": dispatcher.sent,
    }


def run(opts: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    with (
        receiver_process() as receiver,
        database(opts.store) as url,
        tempfile.TemporaryDirectory(prefix="core-api-bench-shm-") as tmp,
    ):
        bodies = sample_bodies(1000, opts.body_bytes)
        cpu_started = time.process_time()
        baseline = bare_loop(
            receiver.url, bodies, concurrency=opts.concurrency, seconds=opts.seconds
        )
        baseline["cpu_us_per_post"] = round(
            (time.process_time() - cpu_started) * 1e6 / max(baseline["posts"], 1), 1
        )
        receiver.reset()
        delivery = asyncio.run(_fan_out_and_deliver(url, receiver.url, opts, Path(tmp)))
        delivery["receiver_counted"] = receiver.count()
    ratio = delivery["deliveries_per_second"] / baseline["per_second"]
    cpu_ratio = baseline["cpu_us_per_post"] / delivery["cpu_us_per_delivery"]
    return {
        **common.report_header("webhooks", load_before),
        "store": opts.store,
        "endpoint_concurrency": opts.endpoint_concurrency,
        "max_in_flight": opts.concurrency,
        "baseline": baseline,
        "delivery": delivery,
        "ratio_to_baseline": round(ratio, 3),
        # Load-independent: bare CPU per post / delivery CPU per delivery (same process).
        "cpu_ratio_to_baseline": round(cpu_ratio, 3),
        "targets": {"deliveries_per_second": TARGET_PER_SECOND, "ratio": TARGET_RATIO},
        "pass": delivery["deliveries_per_second"] >= TARGET_PER_SECOND and ratio >= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--endpoints", type=int, default=16)
    parser.add_argument("--endpoint-concurrency", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=3.0, help="baseline duration")
    parser.add_argument("--body-bytes", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(argv)
    result = run(opts)
    common.write_json(f"webhooks-{opts.store}-{common.timestamp()}.json", result)
    if opts.json:
        print(json.dumps(result, indent=2))
    else:
        d, b = result["delivery"], result["baseline"]
        print(
            f"[{opts.store}] fan-out: {d['events_per_second']:,.0f} events/s "
            f"({d['deliveries_written_per_second']:,.0f} deliveries written/s, "
            f"{d['endpoints']} endpoints)\n"
            f"delivery: {d['deliveries_per_second']:,.0f} deliveries/s per worker process "
            f"({d['delivered']}/{d['deliveries']} in {d['delivery_seconds']} s, "
            f"receiver counted {d['receiver_counted']})\n"
            f"  CPU {d['cpu_us_per_delivery']:.0f} us/delivery "
            f"(one idle core: ~{1e6 / d['cpu_us_per_delivery']:,.0f}/s)\n"
            f"bare aiohttp: {b['per_second']:,.0f} posts/s, CPU {b['cpu_us_per_post']:.0f} us/post"
            f" -> ratio {result['ratio_to_baseline']:.2f} (CPU ratio "
            f"{result['cpu_ratio_to_baseline']:.2f}) "
            f"({'PASS' if result['pass'] else 'MISS'}: >= {TARGET_PER_SECOND:,.0f}/s "
            f"and >= {TARGET_RATIO})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
