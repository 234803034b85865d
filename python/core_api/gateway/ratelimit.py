"""Rate limiting: token buckets, local-first.

* :class:`LocalLimiter`: buckets in the Rust shared-memory table. Every worker process on a
  host maps the same table, so ``serve --workers N`` hands out one budget, not N: exact on
  one host, one atomic critical section per request, no I/O.
* :class:`RedisLimiter`: one budget across nodes. The bucket lives in Redis; each process
  takes tokens from it in small leases (about 50 ms of refill) and spends them locally, so
  most requests never wait on Redis. A lease is refilled in the background before it runs
  dry. Consistency bound: the limit is never exceeded across nodes; at most one unspent
  lease per process and bucket (<= 5% of capacity, 1 token on the free tier) goes unused
  when a process stops sending. If Redis fails, the limiter falls back to the local table
  with one logged warning and retries Redis after a second.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

from .. import _native
from .._native import rate_limit_headers
from ..clock import Clock, iso
from ..errors import RateLimited
from ..plans import Tier

log = logging.getLogger("core_api.ratelimit")


class Decision:
    """One rate-limit verdict; writes the headers every API response carries."""

    __slots__ = ("allowed", "now_s", "remaining", "reset_after", "retry_after", "tier")

    def __init__(
        self,
        allowed: bool,
        tier: Tier,
        remaining: int,
        reset_after: float,
        retry_after: float,
        now_s: float,
    ) -> None:
        self.allowed, self.tier, self.remaining = allowed, tier, remaining
        self.reset_after = reset_after  # seconds until the bucket is full again
        self.retry_after = retry_after  # seconds until one more request is allowed (0 if allowed)
        self.now_s = now_s

    @property
    def limit(self) -> int:
        return self.tier.requests_per_minute

    def headers(self) -> list[tuple[str, str]]:
        remaining = str(self.remaining)
        return [
            ("X-RateLimit-Limit", self.tier.limit_text),
            ("X-RateLimit-Remaining", remaining),
            ("X-RateLimit-Reset", str(math.ceil(self.now_s + self.reset_after))),
            ("RateLimit-Policy", self.tier.policy),
            ("RateLimit", f"{self.tier.policy_name};r={remaining};t={math.ceil(self.reset_after)}"),
        ]

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """``headers()`` as ASGI pairs (lower-case names), built directly as bytes: the
        pixel fast path sends them on every request."""
        reset_after = self.reset_after
        return rate_limit_headers(
            self.tier.raw, self.remaining, self.now_s + reset_after, reset_after
        )

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


class Limiter(Protocol):
    def check_now(self, bucket: bytes, tier: Tier, cost: float = 1.0) -> Decision | None:
        """A decision without waiting, or None when only ``check`` can decide."""

    async def check(self, bucket: bytes, tier: Tier, cost: float = 1.0) -> Decision: ...

    def take_headers(self, bucket: bytes, tier: Tier) -> list[tuple[bytes, bytes]] | None:
        """One request allowed now: its rate-limit headers (``Decision.raw_headers``), in
        one call; None otherwise, having taken nothing (``check_now`` / ``check`` then
        decide, and build the refusal)."""


class LocalLimiter:
    """Exact across the worker processes of one host (shared-memory buckets)."""

    def __init__(self, shared: _native.SharedState, clock: Clock) -> None:
        self.shared, self.clock = shared, clock

    async def check(self, bucket: bytes, tier: Tier, cost: float = 1.0) -> Decision:
        return self.check_now(bucket, tier, cost)

    def check_now(self, bucket: bytes, tier: Tier, cost: float = 1.0) -> Decision:
        allowed, remaining, retry_after, reset_after = self.shared.rate_take(
            bucket, tier.native, self.clock.monotonic_ns(), cost
        )
        return Decision(
            allowed, tier, remaining, reset_after, retry_after, self.clock.now_ms() / 1000
        )

    def take_headers(self, bucket: bytes, tier: Tier) -> list[tuple[bytes, bytes]] | None:
        clock = self.clock
        return self.shared.rate_take_headers(
            bucket, tier.native, clock.monotonic_ns(), clock.now_ms() / 1000, tier.raw
        )


# Takes up to ARGV[3] whole tokens (at least ARGV[4]) from a bucket; time comes from the
# caller (ARGV[5], ms) so every node and the tests share one injectable clock.
# Returns {granted, remaining*1000, retry_after_ms, reset_after_ms}.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = capacity; ts = now end
if now > ts then tokens = math.min(capacity, tokens + (now - ts) * rate / 1000) else now = ts end
local granted = 0
if tokens >= cost then
  granted = math.max(cost, math.min(want, math.floor(tokens)))
  tokens = tokens - granted
end
local retry = 0
if granted == 0 then retry = math.ceil((cost - tokens) * 1000 / rate) end
local reset = math.ceil((capacity - tokens) * 1000 / rate)
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], reset + 1000)
return {tostring(granted), math.floor(tokens * 1000), retry, reset}
"""
LEASE_SECONDS = 0.05  # a lease holds about this much refill
LEASE_TTL_NS = 1_000_000_000  # unspent lease tokens are dropped after this (bounded drift)
REDIS_TIMEOUT = 0.25
RETRY_REDIS_AFTER_NS = 1_000_000_000
# Refills a waiting request may join before it is refused: with a 1-token lease (small
# tiers) each refill serves one waiter, so a burst of waiters needs several rounds.
MAX_REFILL_ROUNDS = 64


@dataclass(slots=True)
class _Lease:
    tokens: float = 0.0
    global_remaining: int = 0
    reset_after: float = 0.0
    expires_ns: int = 0
    denied_until_ns: int = 0
    retry_after: float = 0.0
    refill: asyncio.Task[bool] | None = None

    def denied_at(self, now_ns: int) -> bool:
        return now_ns < self.denied_until_ns


class RedisLimiter:
    """One budget per bucket across every process and node (see module docstring)."""

    def __init__(self, redis: Any, prefix: str, local: LocalLimiter, clock: Clock) -> None:
        self.redis, self.prefix, self.local, self.clock = redis, prefix, local, clock
        self.script = redis.register_script(_TAKE)
        self.leases: dict[bytes, _Lease] = {}
        self.down_until_ns = 0

    def check_now(self, bucket: bytes, tier: Tier, cost: float = 1.0) -> Decision | None:
        """Spend from the local lease; None when the lease must be refilled from Redis."""
        now = self.clock.monotonic_ns()
        if now < self.down_until_ns:
            return self.local.check_now(bucket, tier, cost)
        lease = self.leases.get(bucket)
        # An expired lease is dropped, unless its refill is in flight: a new lease waits for
        # that refill too (replacing it made every waiter start a refill of its own).
        if lease is None or (now >= lease.expires_ns and lease.refill is None):
            if len(self.leases) > 100_000:
                self.leases.clear()  # bounded memory; dropping leases only under-admits
            lease = self.leases[bucket] = _Lease()
        if lease.tokens >= cost:
            return self._spend(bucket, lease, tier, cost)
        if now < lease.denied_until_ns:
            return self._decision(lease, tier, False)
        return None

    def take_headers(self, bucket: bytes, tier: Tier) -> list[tuple[bytes, bytes]] | None:
        return None  # leases are spent by check_now

    async def check(self, bucket: bytes, tier: Tier, cost: float = 1.0) -> Decision:
        decision = self.check_now(bucket, tier, cost)
        if decision is not None:
            return decision
        lease = self.leases[bucket]
        # Single flight: every request waiting on this lease joins one Redis call. Each
        # waiter used to take a lease of its own, so a hot key drained its whole global
        # bucket into leases that expired unspent, and then got 429s it never earned.
        for _ in range(MAX_REFILL_ROUNDS):
            if lease.tokens >= cost:
                return self._spend(bucket, lease, tier, cost)
            if lease.denied_at(self.clock.monotonic_ns()):
                break
            if not await asyncio.shield(self._start_refill(bucket, lease, tier, cost)):
                return self.local.check_now(bucket, tier, cost)  # Redis unavailable
        if lease.tokens >= cost:
            return self._spend(bucket, lease, tier, cost)
        return self._decision(lease, tier, False)

    def _spend(self, bucket: bytes, lease: _Lease, tier: Tier, cost: float) -> Decision:
        lease.tokens -= cost
        chunk = self._chunk(tier)
        if chunk > 1 and lease.refill is None and lease.tokens < chunk / 2:
            # Top the lease up before it runs dry, so busy keys rarely wait on Redis.
            self._start_refill(bucket, lease, tier, cost)
        return self._decision(lease, tier, True)

    def _chunk(self, tier: Tier) -> int:
        return max(1, min(int(tier.refill_per_second * LEASE_SECONDS), int(tier.capacity // 20)))

    def _start_refill(
        self, bucket: bytes, lease: _Lease, tier: Tier, cost: float
    ) -> asyncio.Task[bool]:
        """The lease's one refill in flight, started if none is."""
        if lease.refill is None:
            lease.refill = asyncio.create_task(self._refill_once(bucket, lease, tier, cost))
        return lease.refill

    async def _refill_once(self, bucket: bytes, lease: _Lease, tier: Tier, cost: float) -> bool:
        try:
            return await self._refill(bucket, lease, tier, cost)
        finally:
            lease.refill = None

    async def _refill(self, bucket: bytes, lease: _Lease, tier: Tier, cost: float) -> bool:
        """Take a lease from Redis; False when Redis is unavailable (caller falls back)."""
        now_ms = self.clock.now_ms()
        try:
            granted, remaining, retry_ms, reset_ms = await asyncio.wait_for(
                self.script(
                    keys=[self.prefix.encode() + b"rl:" + bucket],
                    args=[tier.capacity, tier.refill_per_second, self._chunk(tier), cost, now_ms],
                ),
                REDIS_TIMEOUT,
            )
        except Exception as exc:
            if self.down_until_ns == 0:
                log.warning("Redis unavailable for rate limiting (%s); limiting locally", exc)
            self.down_until_ns = self.clock.monotonic_ns() + RETRY_REDIS_AFTER_NS
            return False
        if self.down_until_ns:
            log.warning("Redis is back; rate limits are shared again")
            self.down_until_ns = 0
        now = self.clock.monotonic_ns()
        lease.tokens += float(granted)
        lease.global_remaining = int(remaining) // 1000
        lease.reset_after = int(reset_ms) / 1000
        lease.expires_ns = now + LEASE_TTL_NS
        lease.retry_after = int(retry_ms) / 1000
        lease.denied_until_ns = now + int(retry_ms) * 1_000_000 if float(granted) == 0 else 0
        return True

    def _decision(self, lease: _Lease, tier: Tier, allowed: bool) -> Decision:
        remaining = int(lease.tokens) + lease.global_remaining
        retry = (
            0.0
            if allowed
            else max(lease.retry_after, (lease.denied_until_ns - self.clock.monotonic_ns()) / 1e9)
        )
        return Decision(
            allowed, tier, remaining, lease.reset_after, retry, self.clock.now_ms() / 1000
        )


def per_minute_tier(name: str, per_minute: int) -> Tier:
    """Unauthenticated limits (pixel, failed auth) as tiers without burst."""
    return Tier(name, per_minute, 0.0)
