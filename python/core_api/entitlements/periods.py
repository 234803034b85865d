"""Usage periods, computed from the clock (UTC): no job resets a counter, a new period
simply has a new ``period_start`` and so a new counter row that starts at zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


# The current period per kind: computing one costs microseconds, and checks ask every time.
_CURRENT: dict[str, tuple[int, int]] = {}


def bounds(period: str | None, now_ms: int) -> tuple[int, int | None]:
    """``(period_start, reset_at)`` in epoch ms; ``(0, None)`` for a feature without a
    period (one running total). Weeks start on Monday."""
    if period is None:
        return 0, None
    known = _CURRENT.get(period)
    if known is not None and known[0] <= now_ms < known[1]:
        return known
    found = _compute(period, now_ms)
    _CURRENT[period] = found
    return found


def _compute(period: str, now_ms: int) -> tuple[int, int]:
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else (start.replace(month=start.month + 1))
        )
    elif period == "year":
        start = day.replace(month=1, day=1)
        end = start.replace(year=start.year + 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return _ms(start), _ms(end)
