"""Pure-Python reference implementations of the `core_api._native` hot paths.

These are the "obvious" Python versions the Rust extension is measured against
(budget: each Rust hot path must be at least 3x faster). Same semantics as the
Rust code; not used by the service.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIX = "sk_live_"


def _checksum(body: str) -> str:
    n = zlib.crc32(body.encode())
    out = []
    for _ in range(6):
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return "".join(reversed(out))


def generate_key() -> str:
    """`sk_live_` + 32 base62 chars (secrets.choice) + 6 base62 CRC32."""
    body = PREFIX + "".join(secrets.choice(BASE62) for _ in range(32))
    return body + _checksum(body)


def generate_key_fast() -> str:
    """A tuned variant: one token_bytes call, rejection sampling by byte."""
    chars: list[str] = []
    while len(chars) < 32:
        for b in secrets.token_bytes(48):
            if b < 248:
                chars.append(BASE62[b % 62])
                if len(chars) == 32:
                    break
    body = PREFIX + "".join(chars)
    return body + _checksum(body)


class _Entry:
    __slots__ = ("dirty", "hash", "key_id", "last_used_ms", "value")

    def __init__(self, key_hash: bytes, key_id: int, value: object) -> None:
        self.hash = key_hash
        self.key_id = key_id
        self.value = value
        self.last_used_ms = 0
        self.dirty = False


class KeyCache:
    """dict of HMAC-SHA256(pepper, key) -> entry (hash, key_id, value, last_used_ms, dirty)."""

    def __init__(self, pepper: bytes, *, fast_hmac: bool = False) -> None:
        self.pepper = pepper
        self.map: dict[bytes, _Entry] = {}
        self.generation: int | None = None
        self.fast_hmac = fast_hmac

    def lookup(self, key: str, generation: int, now_ms: int) -> tuple[bytes, object | None]:
        if generation != self.generation:
            self.generation = generation
            self.map.clear()
        if self.fast_hmac:
            h = hmac.digest(self.pepper, key.encode(), "sha256")
        else:
            h = hmac.new(self.pepper, key.encode(), hashlib.sha256).digest()
        entry = self.map.get(h)
        if entry is None or not hmac.compare_digest(entry.hash, h):
            return h, None
        entry.last_used_ms = now_ms
        entry.dirty = True
        return h, entry.value

    def insert(self, key_hash: bytes, key_id: int, value: object) -> None:
        self.map[key_hash] = _Entry(key_hash, key_id, value)


class TokenBuckets:
    """dict of bucket key -> [tokens, updated_ns] behind a threading.Lock."""

    def __init__(self) -> None:
        self.buckets: dict[bytes, list[float]] = {}
        self.lock = threading.Lock()

    def check(
        self, key: bytes, capacity: float, refill: float, cost: float, now_ns: int
    ) -> tuple[bool, float, float, float]:
        with self.lock:
            b = self.buckets.get(key)
            if b is None:
                b = self.buckets[key] = [capacity, now_ns]
            tokens, updated = b
            elapsed = now_ns - updated
            if elapsed > 0:
                tokens = min(capacity, tokens + elapsed / 1e9 * refill)
                updated = now_ns
            else:
                tokens = min(capacity, tokens)
            allowed = cost <= capacity and tokens + 1e-9 >= cost
            if allowed:
                tokens = max(0.0, tokens - cost)
            b[0] = tokens
            b[1] = updated
        retry = 0.0 if allowed else max(0.0, min(cost, capacity) - tokens) / refill
        return allowed, max(tokens, 0.0), retry, max(0.0, capacity - tokens) / refill


def webhook_sign(secrets: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks signatures the obvious way: hmac.new per secret + base64."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in secrets
    )


def webhook_sign_fast(secrets: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """A tuned variant: hmac.digest (one-shot, in C) and one join."""
    signed = b"".join((msg_id.encode(), b".", str(timestamp).encode(), b".", body))
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode() for key in secrets
    )
