"""What the metrics and logging hooks cost per request: this checkout against another.

Two ``core-api serve --workers 1`` servers on one fresh PostgreSQL database: "after" runs
this checkout's code, "before" the ``python/`` directory of another checkout (``--before``,
put first on ``PYTHONPATH``; copy ``_native.abi3.so`` into it). wrk drives ``GET
/api/v1/workspaces/{id}`` (the hot authenticated read) at each in interleaved slices
(before, after, before, after, ...), so background load on a shared machine hits both
alike, and each slice reads the server's CPU time from /proc: the figure is CPU
microseconds per request (median over slices), with req/s beside it.

    git archive <commit> python | tar -x -C /tmp/before
    cp python/core_api/_native.abi3.so /tmp/before/python/core_api/
    python -m benchmarks.metrics_overhead --before /tmp/before/python --slices 6
    python -m benchmarks.metrics_overhead --micro   # the hooks alone, in-process
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
from typing import Any

from . import common
from .peak import parse_wrk

PATH = "/api/v1/workspaces/{id}"


def _slice(
    server: common.Server, url: str, key: str, seconds: int, connections: int
) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    argv += ["-H", f"Authorization: Bearer {key}", url]
    cpu = server.cpu_seconds()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    used = server.cpu_seconds() - cpu
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stderr or out.stdout}")
    result = parse_wrk(out.stdout)
    result["cpu_us_per_request"] = used * 1e6 / max(1, result["requests"])
    return result


def run(opts: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()
    with common.workdir("core-api-metrics-overhead-") as work, contextlib.ExitStack() as stack:
        store = common.postgres_store(work)
        stack.callback(store.close)
        creds = common.bootstrap(store.env, "overhead", common.BENCH_TIER)
        after = common.service_server(store, work, workers=1)
        before = common.service_server(store, work, workers=1)
        before.name, before.log_path = "before", work / "before.log"
        before.env["PYTHONPATH"] = opts.before
        before.env["CORE_API_SHM_PATH"] = store.env["CORE_API_SHM_PATH"] + "-before"
        path = PATH.format(id=creds.workspace_id)
        auth = {"Authorization": f"Bearer {creds.key}"}
        for server in (before, after):
            server.start()
            stack.callback(server.stop)
            server.wait_ready(path, auth)
        servers = {"before": before, "after": after}
        for server in servers.values():  # warm up
            _slice(
                server, f"http://{common.HOST}:{server.port}{path}", creds.key, 2, opts.connections
            )
        slices: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for i in range(opts.slices):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for name in order:
                server = servers[name]
                url = f"http://{common.HOST}:{server.port}{path}"
                slices[name].append(_slice(server, url, creds.key, opts.seconds, opts.connections))
            common.log(
                f"[overhead] slice {i + 1}/{opts.slices}: "
                + ", ".join(
                    f"{n} {slices[n][-1]['rps']:.0f} req/s "
                    f"{slices[n][-1]['cpu_us_per_request']:.1f} us"
                    for n in ("before", "after")
                )
            )
    summary = {
        name: {
            "rps_median": round(statistics.median(s["rps"] for s in runs), 1),
            "cpu_us_per_request_median": round(
                statistics.median(s["cpu_us_per_request"] for s in runs), 2
            ),
            "p50_ms_median": round(statistics.median(s.get("p50_ms", 0.0) for s in runs), 3),
            "non_2xx": sum(s["non_2xx"] for s in runs),
            "slices": [
                {"rps": s["rps"], "cpu_us": round(s["cpu_us_per_request"], 2)} for s in runs
            ],
        }
        for name, runs in slices.items()
    }
    summary["added_cpu_us_per_request"] = round(
        summary["after"]["cpu_us_per_request_median"]
        - summary["before"]["cpu_us_per_request_median"],
        2,
    )
    return {**common.report_header("metrics_overhead", load), "path": PATH, "summary": summary}


def micro(number: int = 200_000, repeat: int = 5) -> dict[str, float]:
    """The hooks' operations timed alone in this process (best of ``repeat``, ns each):
    what the request path adds, without a server's noise."""
    import contextvars
    import timeit
    from time import perf_counter

    from core_api.logs import CURRENT_REQUEST
    from core_api.metrics.registry import REGISTRY, ROUTE_KEY

    request, route = object(), ("GET", "/api/v1/workspaces/{id:id}", "200 OK")

    def hooks() -> None:  # what one request runs, in the order it runs it
        scope: dict[str, Any] = {}
        started = perf_counter()
        CURRENT_REQUEST.set(request)
        scope[ROUTE_KEY] = route
        seen = scope.get(ROUTE_KEY)
        if seen is not None:
            REGISTRY.request(seen[0], seen[1], seen[2], perf_counter() - started)

    def bare() -> None:
        scope: dict[str, Any] = {}
        scope.get(ROUTE_KEY)

    context = contextvars.copy_context()

    def best(fn: Any) -> float:
        runs = timeit.repeat(lambda: context.run(fn), number=number, repeat=repeat)
        return min(runs) / number * 1e9

    with_hooks, without = best(hooks), best(bare)
    return {
        "hooks_ns": round(with_hooks),
        "bare_ns": round(without),
        "added_ns": round(with_hooks - without),
        "registry_request_ns": round(
            min(
                timeit.repeat(
                    lambda: REGISTRY.request(*route, 0.0003), number=number, repeat=repeat
                )
            )
            / number
            * 1e9
        ),
        "perf_counter_ns": round(
            min(timeit.repeat(perf_counter, number=number, repeat=repeat)) / number * 1e9
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.metrics_overhead", description=__doc__)
    p.add_argument("--before", help="python/ directory of the other checkout")
    p.add_argument(
        "--micro", action="store_true", help="only time the hooks' operations in this process"
    )
    p.add_argument("--slices", type=int, default=6)
    p.add_argument("--seconds", type=int, default=4, help="per slice")
    p.add_argument("--connections", type=int, default=32)
    opts = p.parse_args(argv)
    if opts.micro:
        print(json.dumps({**micro(), "loadavg": os.getloadavg()[0]}, indent=2))
        return 0
    if not opts.before:
        p.error("--before is required (or --micro)")
    result = run(opts)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
