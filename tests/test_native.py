"""Behaviour of the Rust extension `core_api._native` through its Python bindings."""

from __future__ import annotations

import hashlib
import hmac
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


def test_generate_key_format_and_checksum() -> None:
    keys = {_native.generate_key() for _ in range(500)}
    assert len(keys) == 500
    for key in keys:
        assert len(key) == _native.KEY_LENGTH == 46
        assert key.startswith(_native.KEY_PREFIX)
        assert key.startswith("sk_live_")
        assert all(c in BASE62 for c in key[8:])
        assert key[40:] == base62_checksum(key[:40])
        assert _native.is_well_formed(key)
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
def test_malformed_keys_are_rejected(bad: str) -> None:
    assert not _native.is_well_formed(bad)


def test_checksum_catches_a_typo() -> None:
    key = _native.generate_key()
    c = key[20]
    typo = key[:20] + ("b" if c == "a" else "a") + key[21:]
    assert not _native.is_well_formed(typo)


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


def test_key_cache_hit_miss_and_last_used() -> None:
    cache = _native.KeyCache(PEPPER, capacity=100)
    key = _native.generate_key()
    key_hash, value = cache.lookup(key, 0, 1_000)
    assert value is None
    assert key_hash == _native.hash_key(PEPPER, key)
    record = {"id": 7, "scopes": ["*"]}
    cache.insert(key_hash, 7, record)
    assert len(cache) == 1
    assert cache.drain_last_used() == []
    key_hash2, value = cache.lookup(key, 0, 2_000)
    assert key_hash2 == key_hash
    assert value is record
    cache.lookup(key, 0, 3_000)
    assert cache.drain_last_used() == [(7, 3_000)]
    assert cache.drain_last_used() == []
    # Another well-formed key misses.
    assert cache.lookup(_native.generate_key(), 0, 4_000)[1] is None


def test_key_cache_malformed_key_is_not_hashed() -> None:
    cache = _native.KeyCache(PEPPER)
    assert cache.lookup("sk_live_nope", 0, 0) == (b"", None)
    assert cache.lookup("", 0, 0) == (b"", None)


def test_key_cache_generation_change_clears() -> None:
    cache = _native.KeyCache(PEPPER)
    key = _native.generate_key()
    key_hash, _ = cache.lookup(key, 5, 0)
    cache.insert(key_hash, 1, "v1", generation=5)
    assert cache.lookup(key, 5, 1)[1] == "v1"
    assert cache.lookup(key, 6, 2)[1] is None
    assert len(cache) == 0
    # A value read from the database under generation 5 is not cached in 6.
    cache.insert(key_hash, 1, "stale", generation=5)
    assert len(cache) == 0
    cache.insert(key_hash, 1, "fresh", generation=6)
    assert cache.lookup(key, 6, 3)[1] == "fresh"


def test_key_cache_remove_and_clear() -> None:
    cache = _native.KeyCache(PEPPER)
    keys = [_native.generate_key() for _ in range(3)]
    for i, key in enumerate(keys):
        cache.insert(cache.lookup(key, 0, 0)[0], i, f"v{i}")
    assert len(cache) == 3
    cache.lookup(keys[1], 0, 50)
    cache.remove_key_id(1)
    cache.remove_key_id(99)  # absent: no-op
    assert cache.lookup(keys[1], 0, 60)[1] is None
    assert cache.lookup(keys[0], 0, 70)[1] == "v0"
    cache.clear()
    assert len(cache) == 0
    # Usage recorded before removal is still reported once.
    assert sorted(cache.drain_last_used()) == [(0, 70), (1, 50)]


def test_key_cache_is_bounded() -> None:
    cache = _native.KeyCache(PEPPER, capacity=64)
    assert cache.capacity == 64
    for i in range(1_000):
        cache.insert(_native.hash_key(PEPPER, str(i)), i, i)
        assert len(cache) <= 64


def test_key_cache_bad_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        _native.KeyCache(PEPPER, capacity=0)
    cache = _native.KeyCache(PEPPER)
    with pytest.raises(ValueError, match="32 bytes"):
        cache.insert(b"short", 1, None)


# ------------------------------------------------------------------ SharedState


def test_shared_state_generation_is_shared(tmp_path: Path) -> None:
    path = tmp_path / "state.shm"
    a = _native.SharedState(str(path), rate_slots=256)
    b = _native.SharedState(path, 256)
    assert a.path == path
    assert a.rate_slots == 256
    assert a.generation() == b.generation() == 0
    assert a.bump_generation() == 1
    assert b.generation() == 1
    assert b.bump_generation() == 2
    assert a.generation() == 2


def test_rate_check_math_with_injected_clock(tmp_path: Path) -> None:
    state = _native.SharedState(tmp_path / "state.shm", 1024)
    t0 = 100 * S
    # Tier: 60/min with +50% burst -> capacity 90, refill 1/s.
    for i in range(90):
        allowed, remaining, retry, reset = state.rate_check(b"key:1", 90, 1.0, 1, t0)
        assert allowed
        assert remaining == 89 - i
        assert retry == 0.0
        assert reset == pytest.approx(i + 1)
    allowed, remaining, retry, reset = state.rate_check(b"key:1", 90, 1.0, 1, t0)
    assert not allowed
    assert remaining == 0.0
    assert retry == pytest.approx(1.0)
    assert reset == pytest.approx(90.0)
    # 2.5 s later: two more requests, then retry in 0.5 s.
    t1 = t0 + 2 * S + S // 2
    assert state.rate_check(b"key:1", 90, 1.0, 1, t1)[0]
    assert state.rate_check(b"key:1", 90, 1.0, 1, t1)[0]
    allowed, remaining, retry, _ = state.rate_check(b"key:1", 90, 1.0, 1, t1)
    assert not allowed
    assert remaining == pytest.approx(0.5)
    assert retry == pytest.approx(0.5)
    # Peek does not consume; the clock going backwards adds nothing.
    assert state.rate_peek(b"key:1", 90, 1.0, t1) == pytest.approx(0.5)
    assert state.rate_peek(b"key:1", 90, 1.0, t1 - 10 * S) == pytest.approx(0.5)
    assert state.rate_peek(b"never-seen", 90, 1.0, t1) == 90.0
    # Reconcile with a global view.
    state.rate_set(b"key:1", 40.0, t1)
    assert state.rate_peek(b"key:1", 90, 1.0, t1) == 40.0
    state.rate_set(b"key:1", 1e9, t1)
    assert state.rate_peek(b"key:1", 90, 1.0, t1) == 90.0


def test_rate_tier() -> None:
    tier = _native.RateTier(90, 1.5)
    assert (tier.capacity, tier.refill_per_sec) == (90.0, 1.5)
    assert repr(tier) == "RateTier(capacity=90.0, refill_per_sec=1.5)"
    for capacity, refill, match in [
        (0, 1.0, "capacity"),
        (float("inf"), 1.0, "capacity"),
        (10, -1.0, "refill_per_sec"),
        (10, float("nan"), "refill_per_sec"),
    ]:
        with pytest.raises(ValueError, match=match):
            _native.RateTier(capacity, refill)


def test_rate_take_matches_rate_check(tmp_path: Path) -> None:
    """Same bucket math; remaining as whole tokens; shared with rate_check."""
    take = _native.SharedState(tmp_path / "take.shm", 1024)
    check = _native.SharedState(tmp_path / "check.shm", 1024)
    tier = _native.RateTier(10, 2.0)
    steps = [(0, 1.0), (0, 4.0), (0, 4.0), (0, 4.0), (S // 4, 1.0), (S, 2.5), (3 * S, 0.0)]
    steps += [(3 * S, 11.0), (10 * S, 3.0), (9 * S, 1.0)]  # cost > capacity, clock backwards
    for now, cost in steps:
        got = take.rate_take(b"k", tier, 100 * S + now, cost)
        want = check.rate_check(b"k", 10, 2.0, cost, 100 * S + now)
        assert type(got) is tuple and len(got) == 4
        assert got[0] is want[0]
        assert type(got[1]) is int and got[1] == int(want[1])
        assert got[2:] == pytest.approx(want[2:])
        assert all(type(v) is float for v in got[2:])
    # The default cost is 1; both methods use the same bucket of a key.
    assert take.rate_take(b"both", tier, S) == (True, 9, 0.0, 0.5)
    assert take.rate_check(b"both", 10, 2.0, 1, S)[1] == 8.0
    assert take.rate_take(b"both", tier, S)[1] == 7
    assert take.rate_peek(b"both", 10, 2.0, S) == 7.0


def test_rate_take_denied_values(tmp_path: Path) -> None:
    state = _native.SharedState(tmp_path / "state.shm", 64)
    tier = _native.RateTier(90, 1.0)
    t0 = 100 * S
    results = [state.rate_take(b"key:1", tier, t0) for _ in range(91)]
    assert [r[1] for r in results[:90]] == list(range(89, -1, -1))
    assert all(r[0] and r[2] == 0.0 for r in results[:90])
    assert results[90][:2] == (False, 0)
    assert results[90][2:] == pytest.approx((1.0, 90.0))
    # 2.5 s later: two more requests, then 0.5 token left and retry in 0.5 s.
    t1 = t0 + 2 * S + S // 2
    assert state.rate_take(b"key:1", tier, t1)[0]
    assert state.rate_take(b"key:1", tier, t1)[0]
    allowed, remaining, retry, reset = state.rate_take(b"key:1", tier, t1)
    assert (allowed, remaining) == (False, 0)
    assert (retry, reset) == pytest.approx((0.5, 89.5))


def test_rate_take_results_are_independent(tmp_path: Path) -> None:
    """The result tuple is reused only once dropped: kept results never change."""
    state = _native.SharedState(tmp_path / "state.shm", 64)
    tier = _native.RateTier(5, 1.0)
    kept = [state.rate_take(b"k", tier, S) for _ in range(7)]
    assert [r[:2] for r in kept] == [(True, 4), (True, 3), (True, 2), (True, 1), (True, 0)] + [
        (False, 0)
    ] * 2
    first = state.rate_take(b"other", tier, S)
    snapshot = tuple(first)
    for _ in range(3):
        state.rate_take(b"other", tier, S)  # dropped at once: may be refilled in place
    assert first == snapshot == (True, 4, 0.0, 1.0)
    held = list(first)
    del first
    for _ in range(3):
        state.rate_take(b"other", tier, S)
    assert held == [True, 4, 0.0, 1.0]
    # rate_check shares the reuse and keeps its float values.
    checked = [state.rate_check(b"c", 5, 1.0, 1, S) for _ in range(3)]
    assert checked == [(True, 4.0, 0.0, 1.0), (True, 3.0, 0.0, 2.0), (True, 2.0, 0.0, 3.0)]


def test_rate_take_bad_arguments(tmp_path: Path) -> None:
    state = _native.SharedState(tmp_path / "state.shm", 64)
    tier = _native.RateTier(10, 1.0)
    with pytest.raises(ValueError, match="now_ns"):
        state.rate_take(b"k", tier, -5)
    with pytest.raises(ValueError, match="cost"):
        state.rate_take(b"k", tier, 0, -1.0)
    with pytest.raises(ValueError, match="cost"):
        state.rate_take(b"k", tier, 0, float("nan"))
    with pytest.raises(TypeError, match="tier"):
        state.rate_take(b"k", (10, 1.0), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bucket_key"):
        state.rate_take("k", tier, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="now_ns"):
        state.rate_take(b"k", tier, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cost"):
        state.rate_take(b"k", tier, 0, "1")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        state.rate_take(b"k", tier, 2**70)
    with pytest.raises(TypeError, match="3 or 4 positional arguments"):
        state.rate_take(b"k", tier)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="keyword"):
        state.rate_take(b"k", tier, 0, cost=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _native.SharedState.rate_take(object(), b"k", tier, 0)  # type: ignore[arg-type]
    assert state.rate_peek(b"k", 10, 1.0, 0) == 10.0  # no failed call touched the bucket
    assert "bucket_key, tier, now_ns, cost=1.0, /" in str(
        __import__("inspect").signature(_native.SharedState.rate_take)
    )


def test_two_handles_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "state.shm"
    a = _native.SharedState(path, 512)
    b = _native.SharedState(path, 512)
    admitted = sum(
        (a if i % 2 else b).rate_check(b"ws:9", 25, 0.1, 1, 5 * S)[0] for i in range(100)
    )
    assert admitted == 25


def test_two_processes_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "state.shm"
    _native.SharedState(path, 512)
    code = (
        "import sys; from core_api import _native\n"
        "s = _native.SharedState(sys.argv[1], 512)\n"
        "t = _native.RateTier(300, 5.0)\n"
        "print(sum(s.rate_check(b'ip:1', 300, 5.0, 1, 10**9)[0] for _ in range(200))\n"
        "      + sum(s.rate_take(b'ip:1', t, 10**9)[0] for _ in range(200)))\n"
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
    assert path.stat().st_size == 128 + 64 * 64


@pytest.mark.parametrize(
    ("capacity", "refill", "cost", "now", "match"),
    [
        (0, 1.0, 1, 0, "capacity"),
        (float("nan"), 1.0, 1, 0, "capacity"),
        (10, 0.0, 1, 0, "refill_per_sec"),
        (10, float("inf"), 1, 0, "refill_per_sec"),
        (10, 1.0, -1, 0, "cost"),
        (10, 1.0, 1, -5, "now_ns"),
    ],
)
def test_rate_check_bad_arguments(
    tmp_path: Path, capacity: float, refill: float, cost: float, now: int, match: str
) -> None:
    state = _native.SharedState(tmp_path / "state.shm", 64)
    with pytest.raises(ValueError, match=match):
        state.rate_check(b"k", capacity, refill, cost, now)


def test_shared_state_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rate_slots"):
        _native.SharedState(tmp_path / "a.shm", 0)
    with pytest.raises(ValueError, match="rate_slots"):
        _native.SharedState(tmp_path / "a.shm", -1)
    state = _native.SharedState(tmp_path / "b.shm", 64)
    with pytest.raises(ValueError, match="tokens"):
        state.rate_set(b"k", float("nan"), 0)
    with pytest.raises(ValueError, match="capacity"):
        state.rate_peek(b"k", -1, 1.0, 0)


def test_shared_state_io_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        _native.SharedState(blocker / "state.shm", 64)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_forked_children_share_budget(tmp_path: Path) -> None:
    import os

    path = tmp_path / "state.shm"
    state = _native.SharedState(path, 512)
    assert state.rate_check(b"fork", 50, 0.01, 1, S)[0]  # parent holds a handle already
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # child: inherited mapping, new pid
            try:
                n = sum(state.rate_check(b"fork", 50, 0.01, 1, S)[0] for _ in range(40))
                os._exit(n)
            except BaseException:
                os._exit(255)
        pids.append(pid)
    total = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids)
    assert total == 49
