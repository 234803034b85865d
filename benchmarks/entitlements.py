"""Entitlements on one worker, PostgreSQL store, against bare Falcon in the same run.

| target     | request                                               | budget                |
|------------|-------------------------------------------------------|-----------------------|
| baseline   | bare Falcon, fixed JSON body                          |                       |
| check      | GET /api/v1/entitlements/check?feature=posts          | >= 0.60 of baseline   |
| usage_post | POST /api/v1/entitlements/usage (atomic, the reference | >= 2,000 req/s       |
|            | body), spread over --writers workspaces (200)         |                       |
| usage_event| the same with a unique event_id each (deduplicated)   | (reported)            |
| usage_hot  | the same, all on one workspace's one counter           | (reported)            |
| ws_post    | POST /api/v1/workspaces (endpoints.py's write), same run | (reference)         |
| ws_get     | GET /api/v1/workspaces/{id}, api_calls metering on    | ratio within 0.03 of  |
| ws_get_off | the same on a server with CORE_API_ENTITLEMENTS_METERING=false | ws_get_off's |

The bench tier (a temporary plans file: the shipped plans plus ``bench``) has 10^9
requests/minute and hard limits of 10^15 on posts and mcp_calls, so the limit is part of
every usage write's condition but never refuses. usage_hot is bound by commit latency:
calls on one counter row serialise on its row lock, held until the commit is durable.
Targets are measured in interleaved wrk slices (``endpoints.interleave``).

Usage::

    python -m benchmarks.entitlements [--seconds 6] [--slices 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import time
from importlib import resources
from pathlib import Path
from typing import Any

from . import common, endpoints
from .common import BENCH_TIER
from .endpoints import Target, interleave

LUA = Path(__file__).resolve().parent / "wrk_usage.lua"
BIG = 10**15
FEATURES = (
    "workspaces",
    "api_keys",
    "webhooks",
    "pixel_sites",
    "api_calls",
    "pixel_events",
    "storage",
)


def plans_text() -> str:
    shipped = (resources.files("core_api") / "plans.toml").read_text()
    limits = "\n".join(f"{name} = -1" for name in FEATURES)
    return (
        f"{shipped}\n[tiers.{BENCH_TIER}]\nrequests_per_minute = 1000000000\nburst = 1.0\n"
        f"[tiers.{BENCH_TIER}.limits]\n{limits}\nposts = {BIG}\n"
        f'mcp_calls = {{ limit = {BIG}, enforcement = "hard" }}\n'
        "custom_domains = true\n"
    )


def run(args: Any) -> dict[str, Any]:
    load_before = os.getloadavg()
    with common.workdir("core-api-entitlements-") as workdir, contextlib.ExitStack() as stack:
        (workdir / "plans.toml").write_text(plans_text())  # base_env keeps an existing file
        store = common.postgres_store(workdir)
        stack.callback(store.close)
        user = common.populate(store.env, "users", "--count", "1")[0]
        writers = common.populate(store.env, "users", "--count", str(args.writers))
        many, one = workdir / "writer-keys.txt", workdir / "one-key.txt"
        many.write_text("".join(w["key"] + "\n" for w in writers))
        one.write_text(user["key"] + "\n")
        auth = {"Authorization": f"Bearer {user['key']}"}
        ws_path = f"/api/v1/workspaces/{user['workspace_id']}"
        service = common.service_server(store, workdir, workers=1)
        metering_off = {**store.env, "CORE_API_ENTITLEMENTS_METERING": "false"}
        off = common.service_server(common.Store("postgres-metering-off", metering_off), workdir)
        baseline = common.baseline_server(workdir)
        for server, path, headers in (
            (service, ws_path, auth),
            (off, ws_path, auth),
            (baseline, "/api/v1/workspaces/1", {}),
        ):
            server.start()
            stack.callback(server.stop)
            server.wait_ready(path, headers)
        token = secrets.token_hex(3)
        targets = [
            Target("baseline", baseline, "/api/v1/workspaces/1"),
            Target("check", service, "/api/v1/entitlements/check?feature=posts", auth),
            Target("ws_get", service, ws_path, auth),
            Target("ws_get_off", off, ws_path, auth),
            Target("usage_post", service, "/api/v1/entitlements/usage",
                   script=[str(many), "mcp_calls", "plain", f"u{token}"]),
            Target("usage_event", service, "/api/v1/entitlements/usage",
                   script=[str(many), "mcp_calls", "events", f"e{token}"]),
            Target("ws_post", service, "/api/v1/workspaces",
                   script=[str(many), "/api/v1/workspaces", "workspace", f"w{token}"]),
            Target("usage_hot", service, "/api/v1/entitlements/usage",
                   script=[str(one), "mcp_calls", "plain", f"h{token}"]),
        ]  # fmt: skip
        post_lua, run_wrk = endpoints.LUA, endpoints.wrk

        def wrk(target: Target, seconds: float, connections: int) -> dict[str, Any]:
            # The usage targets run wrk_usage.lua; ws_post the endpoints runner's own script.
            endpoints.LUA = post_lua if target.name == "ws_post" else LUA
            return run_wrk(target, seconds, connections)

        endpoints.wrk = wrk
        results = interleave(
            targets, args.seconds, args.slices, args.connections, args.warmup, "entitlements"
        )
    return {
        **common.report_header("entitlements", load_before),
        "settings": {
            "seconds": args.seconds,
            "slices": args.slices,
            "connections": args.connections,
            "workers": 1,
            "store": "postgres",
        },
        "targets": results,
        "verdicts": verdicts(results),
    }


def verdicts(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    base = results["baseline"]["rps"] or 1.0
    ratio = {name: r["rps"] / base for name, r in results.items()}
    drop = ratio["ws_get_off"] - ratio["ws_get"]
    rows = [
        ("check / baseline", ratio["check"], ">= 0.60", ratio["check"] >= 0.60, "check"),
        ("usage_post req/s", results["usage_post"]["rps"], ">= 2000",
         results["usage_post"]["rps"] >= 2000, "usage_post"),
        ("ws_get / baseline, metering on", ratio["ws_get"], "", True, "ws_get"),
        ("ws_get / baseline, metering off", ratio["ws_get_off"], "", True, "ws_get_off"),
        ("ratio drop with metering", drop, "<= 0.03", drop <= 0.03, "ws_get"),
        ("ws_post req/s (reference write)", results["ws_post"]["rps"], "", True, "ws_post"),
        ("usage_event req/s (with event_id)", results["usage_event"]["rps"], "", True,
         "usage_event"),
        ("usage_hot req/s (one counter)", results["usage_hot"]["rps"], "", True, "usage_hot"),
    ]  # fmt: skip
    return [
        {
            "figure": figure,
            "value": round(value, 3),
            "budget": budget,
            "errors": results[name]["non_2xx"] + results[name]["socket_errors"],
            "pass": ok and results[name]["error_rate"] <= 0.001,
        }
        for figure, value, budget, ok, name in rows
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.entitlements", description=__doc__)
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per target")
    p.add_argument("--slices", type=int, default=3)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument(
        "--writers", type=int, default=200, help="workspaces the usage POSTs spread over"
    )
    args = p.parse_args(argv)
    started = time.monotonic()
    report = run(args)
    report["wall_s"] = round(time.monotonic() - started, 1)
    path = common.write_json(f"entitlements-{report['timestamp']}.json", report)
    print(f"\nEntitlements (1 worker, PostgreSQL, wrk -t1 -c{args.connections}, interleaved)")
    for name, t in report["targets"].items():
        errors = t["non_2xx"] + t["socket_errors"]
        print(f"{name:<11} {t['rps']:>9.0f} req/s  p99 {t.get('p99_ms', 0):>6.2f} ms  "
              f"errors {errors}")  # fmt: skip
    for v in report["verdicts"]:
        print(f"  {v['figure']:<34} {v['value']:>9.3f} {v['budget']:<8} "
              f"{'PASS' if v['pass'] else 'MISS'}")  # fmt: skip
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
