"""Rate limiting: token buckets in the Rust shared-memory table.

Every worker process on a host maps the same table, so ``serve --workers N`` hands out one
budget, not N (exact on one host). See redis_limits.py for the cross-node mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import _native
from .clock import Clock, iso
from .errors import RateLimited
from .plans import Plans, Tier


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: float  # seconds until one more request would be allowed (0 when allowed)
    policy: str
    now_s: float

    def headers(self) -> list[tuple[str, str]]:
        reset_in = math.ceil(self.reset_after)
        return [
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(self.remaining)),
            ("X-RateLimit-Reset", str(math.ceil(self.now_s + self.reset_after))),
            ("RateLimit-Policy", self.policy),
            ("RateLimit", f"{self.policy.split(';', 1)[0]};r={self.remaining};t={reset_in}"),
        ]

    def error(self) -> RateLimited:
        wait = max(1, math.ceil(self.retry_after))
        exc = RateLimited(
            f"Too many requests. Please retry after {wait} seconds.",
            retry_after=wait,
            limit=self.limit,
            remaining=0,
            reset_at=iso(int((self.now_s + self.reset_after) * 1000)),
        )
        exc.headers["Retry-After"] = str(wait)
        return exc


class LocalLimiter:
    """Exact across the worker processes of one host (shared-memory buckets)."""

    def __init__(self, shared: _native.SharedState, clock: Clock) -> None:
        self.shared, self.clock = shared, clock

    async def check(self, bucket: bytes, tier: Tier, cost: float = 1.0) -> Decision:
        return self.check_now(bucket, tier, cost)

    def check_now(self, bucket: bytes, tier: Tier, cost: float = 1.0) -> Decision:
        now_ns = self.clock.now_ns()
        allowed, remaining, retry_after, reset_after = self.shared.rate_check(
            bucket, tier.capacity, tier.refill_per_second, cost, now_ns
        )
        return Decision(
            allowed,
            tier.requests_per_minute,
            int(remaining),
            reset_after,
            retry_after,
            tier.policy,
            now_ns / 1e9,
        )


def per_minute_tier(name: str, per_minute: int) -> Tier:
    """Unauthenticated limits (pixel, failed auth) as tiers without burst."""
    return Tier(name, per_minute, 0.0)


def tier_for(plans: Plans, name: str) -> Tier:
    return plans.tiers.get(name) or plans.tiers[plans.default_tier]
