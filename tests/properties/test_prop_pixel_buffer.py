"""The pixel event buffer (rust/pixel.rs ``EventBuffer`` via ``_native.PixelBuffer``)
against a deque model: bounded (buffered + in flight never exceed the capacity), FIFO,
and a failed write restores its batch to the front in order, so nothing is lost or
reordered whatever the sequence of pushes, takes, commits and restores."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from core_api import _native

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 6)),
        st.tuples(st.just("take"), st.integers(1, 5)),
        st.tuples(st.just("commit"), st.just(0)),
        st.tuples(st.just("restore"), st.just(0)),
    ),
    max_size=40,
)


def event(n: int) -> tuple[int, int, str, str, None, int, None, str, str, None]:
    return (1, n, "pageview", f"/p/{n}", None, -n, None, "Firefox", "desktop", None)


@SETTINGS
@given(capacity=st.integers(1, 8), ops=ops)
def test_buffer_is_a_bounded_fifo_that_loses_nothing(
    capacity: int, ops: list[tuple[str, int]]
) -> None:
    buffer = _native.PixelBuffer(capacity)
    pending: deque[int] = deque()
    in_flight: list[tuple[_native.PixelBatch, list[int]]] = []
    written: list[int] = []
    refused = 0
    counter = 0
    for op, n in ops:
        if op == "push":
            for _ in range(n):
                counter += 1
                fits = len(pending) + sum(len(ids) for _, ids in in_flight) < capacity
                assert buffer.push(*event(counter)) is fits
                if fits:
                    pending.append(counter)
                else:
                    refused += 1
        elif op == "take":
            batch = buffer.take(n)
            ids = [pending.popleft() for _ in range(min(n, len(pending)))]
            assert [row[1] for row in batch.rows()] == ids
            in_flight.append((batch, ids))
        elif in_flight:
            batch, ids = in_flight.pop(0)  # batches finish in the order they were taken
            if op == "commit":
                assert buffer.commit(batch) == len(ids)
                written += ids
            else:
                assert buffer.restore(batch) == len(ids)
                pending.extendleft(reversed(ids))
            assert len(batch) == 0  # a batch is used once
        flying = sum(len(ids) for _, ids in in_flight)
        assert (buffer.pending, buffer.in_flight) == (len(pending), flying)
        assert buffer.pending + buffer.in_flight <= capacity
        assert buffer.is_full() is (buffer.pending + buffer.in_flight >= capacity)
    # Every accepted event is written, pending or in flight exactly once.
    accounted = written + list(pending) + [i for _, ids in in_flight for i in ids]
    assert sorted(accounted) == sorted(set(accounted))
    assert len(accounted) + refused == counter
