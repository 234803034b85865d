"""Privacy rules of the ingest path: daily salts, Do-Not-Track / Global Privacy Control,
excluded paths.

Visitor ids are SipHash-2-4 (in the extension) of site, IP and user agent under a
16-byte key per UTC day. The key is HMAC-SHA256(server secret, the day's random salt):
the salt lives in the database (every process and node hashes alike), the secret does
not, so a copy of the database alone cannot test guesses of IP and user agent against
the stored ids. Yesterday's salt is kept (sessions crossing midnight keep their ids),
tomorrow's is made ahead of time, older ones are deleted: a deleted salt makes its
day's ids unlinkable to anything, for ever.
"""

from __future__ import annotations

import fnmatch
import functools
import hmac
import secrets

from ..clock import Clock
from ..storage import Database
from . import ingest_repo

DAY_MS = 86_400_000


def day_of(ms: int) -> int:
    """The UTC day number (days since 1970-01-01) of an epoch-ms time."""
    return ms // DAY_MS


class DailySalts:
    """This process's keys for yesterday, today and tomorrow (loaded by :meth:`rotate`)."""

    def __init__(self, db: Database, clock: Clock, secret: bytes) -> None:
        self.db, self.clock, self.secret = db, clock, secret
        self.keys: dict[int, bytes] = {}

    def _key(self, salt_hex: str) -> bytes:
        mac = hmac.new(
            self.secret, b"core-api pixel visitor\x00" + bytes.fromhex(salt_hex), "sha256"
        )
        return mac.digest()[:16]

    def keys_for(self, now_ms: int) -> tuple[bytes, bytes | None] | None:
        """(today's key, yesterday's or None); None when today's is not loaded yet."""
        day = day_of(now_ms)
        today = self.keys.get(day)
        return None if today is None else (today, self.keys.get(day - 1))

    async def ensure(self, now_ms: int) -> tuple[bytes, bytes | None]:
        """Today's keys, rotating first if the process has not loaded them (start-up, or
        a clock that jumped); raises DatabaseUnavailable when the database is down."""
        keys = self.keys_for(now_ms)
        if keys is None:
            await self.rotate()
            keys = self.keys_for(now_ms)
            if keys is None:  # the clock moved on meanwhile: rotate once more
                await self.rotate()
                keys = self.keys_for(now_ms)
        assert keys is not None  # rotate() makes today's salt
        return keys

    async def rotate(self) -> str | None:
        """Make today's and tomorrow's salts (the first process wins), delete those before
        yesterday, load what is left."""
        now = self.clock.now_ms()
        today = day_of(now)
        for day in (today, today + 1):
            if day not in self.keys:
                await ingest_repo.insert_salt_if_missing(self.db, day, secrets.token_hex(16), now)
        deleted = await ingest_repo.delete_salts_before(self.db, today - 1)
        salts = await ingest_repo.salts_from(self.db, today - 1)
        self.keys = {day: self._key(salt) for day, salt in salts.items()}
        return f"{deleted} old salt(s) deleted" if deleted else None


def refuses_tracking(dnt: str | None, gpc: str | None) -> bool:
    """``DNT: 1`` or ``Sec-GPC: 1``."""
    return (dnt is not None and dnt.strip() == "1") or (gpc is not None and gpc.strip() == "1")


@functools.lru_cache(maxsize=1024)
def _matcher(patterns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    globs = tuple(p for p in patterns if any(c in p for c in "*?["))
    prefixes = tuple(p for p in patterns if p not in globs)
    return prefixes, globs


def excluded(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``path`` is excluded: a pattern without wildcards is a path prefix at a
    segment boundary (``/admin`` excludes ``/admin`` and ``/admin/users``, not
    ``/administrator``); one with ``*``, ``?`` or ``[...]`` is a glob over the whole
    path (``/blog/*/draft``)."""
    if not patterns:
        return False
    prefixes, globs = _matcher(patterns)
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if path == base or path.startswith(base + "/") or (not base and path.startswith("/")):
            return True
    return any(fnmatch.fnmatchcase(path, glob) for glob in globs)
