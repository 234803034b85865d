"""Micro-benchmarks: the Rust hot paths in `core_api._native` vs pure Python.

Usage: python benchmarks/micro/bench_native.py [--json out.json] [--quick]

Each case runs the same harness (a loop over pre-built arguments) for the Rust
and the Python implementation, several rounds, and keeps the best ns/op, so
ratios from one run on one machine are comparable. Each Rust hot path should be
at least 3x faster than the obvious pure-Python version.

The limiter case is `SharedState.rate_take` with a `RateTier` built once per
tier, the call the service makes per request, against a pure-Python token
bucket with the same math (`pure_python.TokenBuckets.check`). Both return the
same information (`rate_take` gives the remaining tokens as a whole number,
which is what the response headers show). These figures isolate the call; the
limiter's worth is judged on the whole request (`python -m benchmarks.peak`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pure_python

from core_api import _native

TARGET_RATIO = 3.0


def _one_pass(fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> float:
    t0 = time.perf_counter_ns()
    for a in args:
        fn(*a)
    return (time.perf_counter_ns() - t0) / len(args)


def compare(
    rust: Callable[..., Any],
    python: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    rounds: int,
) -> tuple[float, float]:
    """Best ns per call of each, alternating passes so that drift hits both."""
    return compare_pair(rust, args, python, args, rounds)


def compare_pair(
    rust: Callable[..., Any],
    rust_args: Sequence[tuple[Any, ...]],
    python: Callable[..., Any],
    python_args: Sequence[tuple[Any, ...]],
    rounds: int,
) -> tuple[float, float]:
    """`compare` for two APIs of one operation, each called with its own arguments."""
    best_rust = best_py = float("inf")
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            best_rust = min(best_rust, _one_pass(rust, rust_args))
            best_py = min(best_py, _one_pass(python, python_args))
    finally:
        if gc_was_enabled:
            gc.enable()
    return best_rust, best_py


def row(
    case: str,
    timings: tuple[float, float],
    python_impl: str,
    target: float = TARGET_RATIO,
) -> dict[str, Any]:
    rust_ns, python_ns = timings
    return {
        "case": case,
        "rust_ns": rust_ns,
        "python_ns": python_ns,
        "speedup": python_ns / rust_ns,
        "python_impl": python_impl,
        "target": target,
    }


def bench_key_lookup(n: int, rounds: int) -> list[dict[str, Any]]:
    pepper = b"server-pepper-0123456789abcdef0123456789"
    keys = [_native.generate_key() for _ in range(1000)]
    rust = _native.KeyCache(pepper, 100_000)
    py = pure_python.KeyCache(pepper)
    py_fast = pure_python.KeyCache(pepper, fast_hmac=True)
    for i, k in enumerate(keys):
        h = _native.hash_key(pepper, k)
        rust.insert(h, i, {"id": i})
        py.insert(h, i, {"id": i})
        py_fast.insert(h, i, {"id": i})
    args = [(keys[i % len(keys)], 1, i) for i in range(n)]
    # Correctness cross-check before timing.
    for cache in (py, py_fast):
        for a in args[:50]:
            assert cache.lookup(*a) == rust.lookup(*a)
    return [
        row(
            "key lookup (hash + hit)",
            compare(rust.lookup, py.lookup, args, rounds),
            "hmac.new(pepper, key, sha256).digest() + dict + compare_digest",
        ),
        row(
            "key lookup vs hmac.digest",
            compare(rust.lookup, py_fast.lookup, args, rounds),
            "hmac.digest(pepper, key, 'sha256') (one-shot C) + dict + compare",
        ),
    ]


def bench_rate_take(n: int, rounds: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        state = _native.SharedState(os.path.join(tmp, "take.shm"), 65536)
        py_buckets = pure_python.TokenBuckets()
        t0 = 10**12
        # 1000 buckets (keys), Pro-like tier: 1000/min + 50% burst; all admitted.
        capacity, refill = 1500.0, 1000 / 60
        tier = _native.RateTier(capacity, refill)
        bucket_keys = [f"key:{i}".encode() for i in range(1000)]
        args = [(bucket_keys[i % 1000], capacity, refill, 1.0, t0 + i * 1000) for i in range(n)]
        take_args = [(a[0], tier, a[4]) for a in args]
        # Correctness cross-check before timing (both see the same calls).
        for a, ta in zip(args[:2000], take_args[:2000], strict=True):
            t, q = state.rate_take(*ta), py_buckets.check(*a)
            assert t[0] == q[0] and t[1] == int(q[1]), (t, q)
            assert abs(t[2] - q[2]) < 1e-6 and abs(t[3] - q[3]) < 1e-6, (t, q)
        return [
            row(
                "rate_take(key, RateTier, now)",
                compare_pair(state.rate_take, take_args, py_buckets.check, args, rounds),
                "dict of [tokens, ts] + threading.Lock, same math",
            ),
        ]


def bench_generate_key(n: int, rounds: int) -> list[dict[str, Any]]:
    args = [()] * n
    checker = _native.KeyCache(b"pepper")  # a malformed key looks up to an empty hash
    for k in (pure_python.generate_key(), pure_python.generate_key_fast()):
        assert checker.lookup(k, 0, 0)[0], k
    return [
        row(
            "generate_key",
            compare(_native.generate_key, pure_python.generate_key, args, rounds),
            "secrets.choice x32 + zlib.crc32 + base62",
        ),
        row(
            "generate_key vs tuned Python",
            compare(_native.generate_key, pure_python.generate_key_fast, args, rounds),
            "secrets.token_bytes + rejection sampling + zlib.crc32",
        ),
    ]


def bench_webhook_sign(n: int, rounds: int) -> list[dict[str, Any]]:
    """Signing one delivery: a typical ~1 KiB event body, with one secret and with two (a
    secret being rotated signs beside the new one)."""
    secrets = [os.urandom(32), os.urandom(32)]
    bodies = [
        (b'{"id":"evt_%026d","type":"post.created","data":{"t":"' % i) + b"x" * 960 + b'"}}'
        for i in range(100)
    ]
    rows = []
    for count in (1, 2):
        keys = secrets[:count]
        args = [(keys, f"evt_{i:026d}", 1_750_000_000 + i, bodies[i % 100]) for i in range(n)]
        for a in args[:200]:  # correctness cross-check before timing
            assert _native.webhook_sign(*a) == pure_python.webhook_sign(*a)
        label = "1 secret" if count == 1 else "2 secrets"
        rows.append(
            row(
                f"webhook_sign (1 KiB body, {label})",
                compare(_native.webhook_sign, pure_python.webhook_sign, args, rounds),
                "hmac.new(key, id.ts.body, sha256) per secret + base64",
            )
        )
        if count == 1:
            assert _native.webhook_sign(*args[0]) == pure_python.webhook_sign_fast(*args[0])
            rows.append(
                row(
                    "webhook_sign vs hmac.digest (1 KiB, 1 secret)",
                    compare(_native.webhook_sign, pure_python.webhook_sign_fast, args, rounds),
                    "hmac.digest(key, msg, 'sha256') (one-shot C) + base64",
                )
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write results as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    opts = parser.parse_args(argv)
    n, rounds = (2_000, 2) if opts.quick else (100_000, 5)

    results: list[dict[str, Any]] = []
    results += bench_key_lookup(n, rounds)
    results += bench_rate_take(n, rounds)
    results += bench_generate_key(max(n // 10, 100), rounds)
    results += bench_webhook_sign(max(n // 5, 200), rounds)

    width = max(len(r["case"]) for r in results)
    header = f"{'case':<{width}}  {'rust ns/op':>10}  {'python ns/op':>12}  {'speedup':>8}"
    print(f"{header}  target")
    for r in results:
        verdict = "ok" if r["speedup"] >= r["target"] else "BELOW"
        print(
            f"{r['case']:<{width}}  {r['rust_ns']:>10.0f}  {r['python_ns']:>12.0f}"
            f"  {r['speedup']:>7.1f}x  >= {r['target']:g}x {verdict}"
        )
    print(f"(best of {rounds} rounds, Rust and Python passes interleaved)")

    if opts.json:
        payload = {
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "iterations": n,
            "rounds": rounds,
            "target_ratio": TARGET_RATIO,
            "results": results,
        }
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
