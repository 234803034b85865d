"""Behaviour of the Rust extension `core_api._native` through its Python bindings."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from core_api import _native

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
S = 1_000_000_000  # ns per second
PEPPER = b"pepper-for-tests"


def base62_checksum(body: str) -> str:
    n = zlib.crc32(body.encode())
    out = ""
    for _ in range(6):
        n, r = divmod(n, 62)
        out = BASE62[r] + out
    return out


# ------------------------------------------------------------------ keys


def well_formed(key: str) -> bool:
    """The extension's format check, as the key cache applies it: a malformed key is
    rejected before hashing (empty hash)."""
    return _native.KeyCache(PEPPER).lookup(key, 0, 0)[0] != b""


def test_generate_key_format_and_checksum() -> None:
    keys = {_native.generate_key() for _ in range(500)}
    assert len(keys) == 500
    for key in keys:
        assert len(key) == 46
        assert key.startswith("sk_live_")
        assert all(c in BASE62 for c in key[8:])
        assert key[40:] == base62_checksum(key[:40])
        assert well_formed(key)
        assert _native.key_prefix(key) == key[:11]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sk_live_",
        "sk_test_" + "a" * 38,
        "sk_live_" + "a" * 37,
        "sk_live_" + "a" * 39,
        "sk_live_" + "-" * 32 + "000000",
        "sk_live_" + "a" * 30 + "é" + "000000",
        "sk_live_" + "a" * 32 + "zzzzzz",
    ],
)
def test_malformed_keys_are_rejected_unhashed(bad: str) -> None:
    assert _native.KeyCache(PEPPER).lookup(bad, 0, 0) == (b"", None)


def test_checksum_catches_a_typo() -> None:
    key = _native.generate_key()
    c = key[20]
    typo = key[:20] + ("b" if c == "a" else "a") + key[21:]
    assert well_formed(key)
    assert not well_formed(typo)


def test_hash_key_is_hmac_sha256_with_pepper() -> None:
    key = _native.generate_key()
    expected = hmac.new(PEPPER, key.encode(), hashlib.sha256).digest()
    assert _native.hash_key(PEPPER, key) == expected
    assert _native.hash_key(PEPPER, key) == _native.hash_key(PEPPER, key)
    assert _native.hash_key(b"other", key) != expected


def test_constant_time_eq() -> None:
    assert _native.constant_time_eq(b"abc", b"abc")
    assert not _native.constant_time_eq(b"abc", b"abd")
    assert not _native.constant_time_eq(b"abc", b"ab")
    assert _native.constant_time_eq(b"", b"")


# ------------------------------------------------------------------ KeyCache


def cached(cache: _native.KeyCache, keys: list[str], generation: int = 0) -> int:
    """How many of ``keys`` hit (each lookup records a use at time 0)."""
    return sum(cache.lookup(k, generation, 0)[1] is not None for k in keys)


def test_key_cache_hit_miss_and_last_used() -> None:
    cache = _native.KeyCache(PEPPER, capacity=100)
    key = _native.generate_key()
    key_hash, value = cache.lookup(key, 0, 1_000)
    assert value is None
    assert key_hash == _native.hash_key(PEPPER, key)
    record = {"id": 7, "scopes": ["*"]}
    cache.insert(key_hash, 7, record)
    assert cache.drain_last_used() == []
    key_hash2, value = cache.lookup(key, 0, 2_000)
    assert key_hash2 == key_hash
    assert value is record
    cache.lookup(key, 0, 3_000)
    assert cache.drain_last_used() == [(7, 3_000)]
    assert cache.drain_last_used() == []
    # Another well-formed key misses.
    assert cache.lookup(_native.generate_key(), 0, 4_000)[1] is None


def test_key_cache_generation_change_clears() -> None:
    cache = _native.KeyCache(PEPPER)
    key = _native.generate_key()
    key_hash, _ = cache.lookup(key, 5, 0)
    cache.insert(key_hash, 1, "v1", generation=5)
    assert cache.lookup(key, 5, 1)[1] == "v1"
    assert cache.lookup(key, 6, 2)[1] is None
    # A value read from the database under generation 5 is not cached in 6.
    cache.insert(key_hash, 1, "stale", generation=5)
    assert cache.lookup(key, 6, 3)[1] is None
    cache.insert(key_hash, 1, "fresh", generation=6)
    assert cache.lookup(key, 6, 3)[1] == "fresh"
    # Usage recorded before the clear is kept for the drain, next to the new one.
    assert cache.drain_last_used() == [(1, 1), (1, 3)]


def test_key_cache_one_entry_per_key_id() -> None:
    cache = _native.KeyCache(PEPPER)
    old, new = _native.generate_key(), _native.generate_key()
    cache.insert(cache.lookup(old, 0, 0)[0], 1, "old")
    cache.insert(cache.lookup(new, 0, 0)[0], 1, "new")
    assert cache.lookup(old, 0, 0)[1] is None
    assert cache.lookup(new, 0, 0)[1] == "new"


def test_key_cache_is_bounded() -> None:
    cache = _native.KeyCache(PEPPER, capacity=64)
    keys = [_native.generate_key() for _ in range(1_000)]
    for i, key in enumerate(keys):
        cache.insert(cache.lookup(key, 0, 0)[0], i, i, generation=0)
    # Full, about 1/8 is evicted: the cache stays between 7/8 and all of its capacity.
    assert 56 <= cached(cache, keys) <= 64
    assert cached(cache, keys[-1:]) == 1  # the newest entry is never the one evicted


def test_key_cache_bad_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        _native.KeyCache(PEPPER, capacity=0)
    cache = _native.KeyCache(PEPPER)
    with pytest.raises(ValueError, match="32 bytes"):
        cache.insert(b"short", 1, None)


# ------------------------------------------------------------------ SharedState


def tokens(
    state: _native.SharedState, key: bytes, capacity: float, refill: float, now: int
) -> float:
    """The bucket's tokens at ``now`` (a zero-cost take: ``reset_after_s`` tells them)."""
    reset_after = state.rate_take(key, _native.RateTier(capacity, refill), now, 0.0)[3]
    return capacity - reset_after * refill


def reference(
    capacity: float, refill: float, steps: list[tuple[int, float]]
) -> list[tuple[bool, int, float, float]]:
    """The documented token bucket in plain Python: starts full, refills by elapsed
    time (a clock going backwards adds nothing), admits when ``tokens >= cost``."""
    out = []
    level, last = capacity, steps[0][0]
    for now, cost in steps:
        level = min(capacity, level + max(0, now - last) / S * refill)
        last = max(last, now)
        allowed = cost <= capacity and level + 1e-9 >= cost
        if allowed:
            level = max(0.0, level - cost)
        retry = 0.0 if allowed else max(0.0, min(cost, capacity) - level) / refill
        out.append((allowed, int(level), retry, (capacity - level) / refill))
    return out


def test_shared_state_generation_is_shared(tmp_path: Path) -> None:
    path = tmp_path / "state.shm"
    a = _native.SharedState(str(path), rate_slots=256)
    b = _native.SharedState(path, 256)
    assert a.generation() == b.generation() == 0
    assert a.bump_generation() == 1
    assert b.generation() == 1
    assert b.bump_generation() == 2
    assert a.generation() == 2


def test_rate_take_math_with_injected_clock(tmp_path: Path) -> None:
    state = _native.SharedState(tmp_path / "state.shm", 64)
    # Tier: 60/min with +50% burst -> capacity 90, refill 1/s.
    t90 = _native.RateTier(90, 1.0)
    t0 = 100 * S
    results = [state.rate_take(b"key:1", t90, t0) for _ in range(91)]
    assert [r[1] for r in results[:90]] == list(range(89, -1, -1))
    assert all(r[0] and r[2] == 0.0 for r in results[:90])
    assert [r[3] for r in results[:90]] == pytest.approx([i + 1.0 for i in range(90)])
    assert results[90][:2] == (False, 0)
    assert results[90][2:] == pytest.approx((1.0, 90.0))
    # 2.5 s later: two more requests, then 0.5 token left and retry in 0.5 s.
    t1 = t0 + 2 * S + S // 2
    assert state.rate_take(b"key:1", t90, t1)[0]
    assert state.rate_take(b"key:1", t90, t1)[0]
    allowed, remaining, retry, reset = state.rate_take(b"key:1", t90, t1)
    assert (allowed, remaining) == (False, 0)
    assert (retry, reset) == pytest.approx((0.5, 89.5))
    # The clock going backwards adds nothing; a new key starts full.
    assert tokens(state, b"key:1", 90, 1.0, t1 - 10 * S) == pytest.approx(0.5)
    assert tokens(state, b"never-seen", 90, 1.0, t1) == 90.0


def test_rate_take_matches_the_documented_bucket(tmp_path: Path) -> None:
    state = _native.SharedState(tmp_path / "take.shm", 1024)
    steps = [(0, 1.0), (0, 4.0), (0, 4.0), (0, 4.0), (S // 4, 1.0), (S, 2.5), (3 * S, 0.0)]
    steps += [(3 * S, 11.0), (10 * S, 3.0), (9 * S, 1.0)]  # cost > capacity, clock backwards
    steps = [(100 * S + now, cost) for now, cost in steps]
    t = _native.RateTier(10, 2.0)
    got = [state.rate_take(b"k", t, now, cost) for now, cost in steps]
    want = reference(10, 2.0, steps)
    for g, w in zip(got, want, strict=True):
        assert type(g) is tuple and len(g) == 4
        assert g[:2] == w[:2]
        assert type(g[1]) is int
        assert g[2:] == pytest.approx(w[2:])
        assert all(type(v) is float for v in g[2:])
    assert [g[0] for g in got] == [True, True, True, False, True, False, True, False, True, True]
    # The default cost is 1.
    assert state.rate_take(b"default", t, S) == (True, 9, 0.0, 0.5)
    assert state.rate_take(b"default", t, S)[1] == 8


def test_rate_tier() -> None:
    t = _native.RateTier(90, 1.5)
    assert repr(t) == "RateTier(capacity=90.0, refill_per_sec=1.5)"
    for capacity, refill, match in [
        (0, 1.0, "capacity"),
        (float("inf"), 1.0, "capacity"),
        (float("nan"), 1.0, "capacity"),
        (10, -1.0, "refill_per_sec"),
        (10, 0.0, "refill_per_sec"),
        (10, float("nan"), "refill_per_sec"),
    ]:
        with pytest.raises(ValueError, match=match):
            _native.RateTier(capacity, refill)


def test_rate_take_bad_arguments(tmp_path: Path) -> None:
    state = _native.SharedState(tmp_path / "state.shm", 64)
    t = _native.RateTier(10, 1.0)
    with pytest.raises(ValueError, match="now_ns"):
        state.rate_take(b"k", t, -5)
    with pytest.raises(ValueError, match="cost"):
        state.rate_take(b"k", t, 0, -1.0)
    with pytest.raises(ValueError, match="cost"):
        state.rate_take(b"k", t, 0, float("nan"))
    with pytest.raises(TypeError, match="tier"):
        state.rate_take(b"k", (10, 1.0), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bucket_key"):
        state.rate_take("k", t, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="now_ns"):
        state.rate_take(b"k", t, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cost"):
        state.rate_take(b"k", t, 0, "1")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        state.rate_take(b"k", t, 2**70)
    with pytest.raises(TypeError, match="now_ns"):
        state.rate_take(b"k", t)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="keyword"):
        state.rate_take(b"k", t, 0, cost=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _native.SharedState.rate_take(object(), b"k", t, 0)  # type: ignore[arg-type]
    assert tokens(state, b"k", 10, 1.0, 0) == 10.0  # no failed call touched the bucket
    assert "bucket_key, tier, now_ns, cost=1.0, /" in str(
        inspect.signature(_native.SharedState.rate_take)
    )


def test_two_handles_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "state.shm"
    a = _native.SharedState(path, 512)
    b = _native.SharedState(path, 512)
    t = _native.RateTier(25, 0.1)
    admitted = sum((a if i % 2 else b).rate_take(b"ws:9", t, 5 * S)[0] for i in range(100))
    assert admitted == 25


def test_two_processes_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "state.shm"
    _native.SharedState(path, 512)
    code = (
        "import sys; from core_api import _native\n"
        "s = _native.SharedState(sys.argv[1], 512)\n"
        "t = _native.RateTier(300, 5.0)\n"
        "print(sum(s.rate_take(b'ip:1', t, 10**9)[0] for _ in range(400)))\n"
        "s.bump_generation()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    total = sum(int(p.communicate(timeout=60)[0]) for p in procs)
    assert total == 300
    assert _native.SharedState(path, 512).generation() == 3


def test_incompatible_file_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "state.shm"
    path.write_bytes(b"garbage" * 100)
    state = _native.SharedState(path, 64)
    assert state.generation() == 0
    overhead = 256 + 16 * _native.SharedState.log_len  # header + invalidation log
    assert path.stat().st_size == overhead + 64 * 64
    # Another slot count is another layout: the file is replaced, not reinterpreted.
    state.bump_generation()
    assert _native.SharedState(path, 32).generation() == 0
    assert path.stat().st_size == overhead + 32 * 64


def test_shared_state_bad_arguments(tmp_path: Path) -> None:
    for slots in (0, -1, 2**24 + 1, 2**40):
        with pytest.raises(ValueError, match="rate_slots"):
            _native.SharedState(tmp_path / "a.shm", slots)
    assert not (tmp_path / "a.shm").exists()


def test_shared_state_io_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        _native.SharedState(blocker / "state.shm", 64)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_children_share_budget(tmp_path: Path) -> None:
    path = tmp_path / "state.shm"
    state = _native.SharedState(path, 512)
    t = _native.RateTier(50, 0.01)
    assert state.rate_take(b"fork", t, S)[0]  # parent holds a handle already
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # child: inherited mapping, new pid
            try:
                n = sum(state.rate_take(b"fork", t, S)[0] for _ in range(40))
                os._exit(n)
            except BaseException:
                os._exit(255)
        pids.append(pid)
    total = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids)
    assert total == 49
