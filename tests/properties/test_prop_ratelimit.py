"""Token-bucket invariants of the shared-memory limiter (rust/ratelimit.rs) with a manual
clock: ``SharedState.rate_take`` takes ``now_ns`` from the caller.

The model is exact (fractions): ``tokens = min(capacity, tokens + elapsed * refill)``
from a full start, the clock being the latest time seen (going back adds nothing). The
limiter's decisions are checked against it with a small tolerance (it works in floats
and admits within 1e-9 of the cost), and the model follows the limiter's decisions, so
one boundary case cannot make the two drift apart.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core_api import _native

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None)
S = 1_000_000_000
T0 = 1_000 * S
_keys = itertools.count()


@pytest.fixture(scope="module")
def state_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("prop-rate") / "state.shm"


@pytest.fixture(scope="module")
def shared(state_path: Path) -> _native.SharedState:
    return _native.SharedState(state_path, rate_slots=65536)


def fresh_key() -> bytes:
    """A bucket no other example touched (a new bucket starts full)."""
    return f"prop:{next(_keys)}".encode()


capacities = st.one_of(st.integers(1, 100).map(float), st.floats(0.5, 1000.0))
refills = st.one_of(st.sampled_from([0.001, 0.5, 1.0, 10.0, 1000.0]), st.floats(0.001, 10_000.0))
# (clock step in ns, possibly backwards; cost as a fraction of the capacity, or a whole 1)
steps = st.tuples(
    st.one_of(
        st.just(0),
        st.integers(0, S),
        st.integers(0, 30 * S),
        st.integers(-5 * S, 0),
    ),
    st.one_of(st.just(None), st.floats(0.0, 1.5)),
)


class Model:
    def __init__(self, capacity: float, refill: float, now: int) -> None:
        self.capacity = Fraction(capacity)
        self.refill = Fraction(refill)
        self.tokens = self.capacity
        self.clock = now  # latest time seen

    def advance(self, now: int) -> None:
        if now > self.clock:
            gained = self.refill * Fraction(now - self.clock, S)
            self.tokens = min(self.capacity, self.tokens + gained)
            self.clock = now


def tolerance(capacity: float) -> float:
    return 1e-6 * max(1.0, capacity)


@SETTINGS
@given(capacity=capacities, refill=refills, ops=st.lists(steps, min_size=1, max_size=60))
def test_decisions_follow_the_token_bucket(
    shared: _native.SharedState,
    capacity: float,
    refill: float,
    ops: list[tuple[int, float | None]],
) -> None:
    tier = _native.RateTier(capacity, refill)
    key = fresh_key()
    tol = tolerance(capacity)
    now = T0
    model: Model | None = None  # the bucket is created (full) by the first take
    admitted: list[tuple[int, float]] = []  # (effective clock, cost) of every admission
    for step, share in ops:
        now = max(0, now + step)
        cost = 1.0 if share is None else share * capacity
        allowed, remaining, retry, reset = shared.rate_take(key, tier, now, cost)
        model = model or Model(capacity, refill, now)
        model.advance(now)
        before = float(model.tokens)
        # Remaining: whole tokens, never negative, never above the capacity.
        assert isinstance(remaining, int)
        assert 0 <= remaining <= math.floor(capacity)
        assert 0.0 <= reset <= capacity / refill * (1 + 1e-9) + 1e-9
        if cost > capacity:
            assert not allowed  # never admitted, retry when full
            assert retry == pytest.approx(max(0.0, capacity - before) / refill, rel=1e-6, abs=tol)
        elif allowed:
            assert before >= cost - tol
            assert retry == 0.0
            model.tokens = max(Fraction(0), model.tokens - Fraction(cost))
            admitted.append((model.clock, cost))
        else:
            assert before < cost + tol
            # Refused exactly when retry-after is positive; and it is the wait for `cost`.
            assert retry > 0.0
            assert retry == pytest.approx((cost - before) / refill, rel=1e-6, abs=tol / refill)
        after = float(model.tokens)
        assert remaining <= after + tol
        assert remaining >= math.floor(after + tol) - 1
        assert reset == pytest.approx((capacity - after) / refill, rel=1e-6, abs=tol / refill)

    # From a full start, no window admits more than capacity + refill x its length.
    for i in range(len(admitted)):
        total = 0.0
        for j in range(i, len(admitted)):
            total += admitted[j][1]
            elapsed = (admitted[j][0] - admitted[i][0]) / S
            assert total <= capacity + refill * elapsed + tol * (j - i + 1)


@SETTINGS
@given(
    capacity=capacities,
    refill=refills,
    drain=st.lists(steps, max_size=20),
    waits=st.lists(st.integers(0, 10 * S), min_size=1, max_size=20),
)
def test_refill_is_monotone_and_capped(
    shared: _native.SharedState,
    capacity: float,
    refill: float,
    drain: list[tuple[int, float | None]],
    waits: list[int],
) -> None:
    tier = _native.RateTier(capacity, refill)
    key = fresh_key()
    now = T0
    for step, share in drain:
        now = max(0, now + step)
        shared.rate_take(key, tier, now, 1.0 if share is None else share * capacity)
    # Zero-cost takes only look: always admitted, and as time goes on the bucket only fills.
    last_remaining, last_reset = -1, math.inf
    for wait in waits:
        now += wait
        allowed, remaining, retry, reset = shared.rate_take(key, tier, now, 0.0)
        assert allowed and retry == 0.0
        assert last_remaining <= remaining <= math.floor(capacity)
        assert reset <= last_reset
        last_remaining, last_reset = remaining, reset
    # Long enough after: full again.
    allowed, remaining, _, reset = shared.rate_take(
        key, tier, now + math.ceil(capacity / refill * S) + S, 0.0
    )
    assert allowed and remaining == math.floor(capacity) and reset == 0.0


@SETTINGS
@given(
    capacity=capacities,
    refill=refills,
    ops=st.lists(st.tuples(st.integers(0, 2), steps), min_size=1, max_size=40),
)
def test_buckets_are_independent_and_shared_across_handles(
    shared: _native.SharedState,
    state_path: Path,
    capacity: float,
    refill: float,
    ops: list[tuple[int, tuple[int, float | None]]],
) -> None:
    """Three keys interleaved through two mappings of one file decide exactly as each
    key alone through one mapping does."""
    other = _native.SharedState(state_path, rate_slots=65536)
    tier = _native.RateTier(capacity, refill)
    mixed = [fresh_key() for _ in range(3)]
    alone = [fresh_key() for _ in range(3)]
    clocks = [T0] * 3
    for n, (which, (step, share)) in enumerate(ops):
        clocks[which] = max(0, clocks[which] + step)
        cost = 1.0 if share is None else share * capacity
        handle = shared if n % 2 else other
        got = handle.rate_take(mixed[which], tier, clocks[which], cost)
        expected = shared.rate_take(alone[which], tier, clocks[which], cost)
        assert got == expected


@SETTINGS
@given(
    capacity=st.floats(-1e9, 1e9) | st.sampled_from([math.nan, math.inf, -math.inf, 0.0]),
    refill=st.floats(-1e9, 1e9) | st.sampled_from([math.nan, math.inf, 0.0]),
    cost=st.floats(allow_nan=True, allow_infinity=True),
    now=st.integers(-(2**63), 2**63 - 1),
)
def test_invalid_arguments_are_refused_and_touch_nothing(
    shared: _native.SharedState, capacity: float, refill: float, cost: float, now: int
) -> None:
    tier_ok = math.isfinite(capacity) and capacity > 0 and math.isfinite(refill) and refill > 0
    if not tier_ok:
        with pytest.raises(ValueError):
            _native.RateTier(capacity, refill)
        return
    tier = _native.RateTier(capacity, refill)
    key = fresh_key()
    if now >= 0 and math.isfinite(cost) and cost >= 0:
        allowed, *_ = shared.rate_take(key, tier, now, cost)
        assert allowed is (cost <= capacity)  # a new bucket starts full
    else:
        with pytest.raises(ValueError):
            shared.rate_take(key, tier, now, cost)
        # The refused call created no state: the bucket is still full.
        assert shared.rate_take(key, tier, max(now, 0), 0.0)[1] == math.floor(capacity)
