"""pixel.js, read and compressed once per process; answers carry a strong ETag.

The URL is not versioned (site owners paste it once), so the cache is long but not
immutable: a day fresh, a week stale-while-revalidate, then a revalidation by ETag that
costs a 304.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

CACHE_CONTROL = "public, max-age=86400, stale-while-revalidate=604800"
MAX_GZIPPED = 1024


@dataclass(frozen=True, slots=True)
class Script:
    body: bytes
    gzipped: bytes
    etag: str  # of the identity body; the gzipped one is etag + "-gz" (a different entity)

    @classmethod
    def load(cls) -> Script:
        body = (resources.files("core_api.pixel") / "static" / "pixel.js").read_bytes()
        # mtime=0: the same bytes (and so the same ETag) in every process and node.
        gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        return cls(body, gzipped, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')

    def variant(self, accept_encoding: str | None) -> tuple[bytes, str, bool]:
        """(body, etag, gzipped) for a request's Accept-Encoding."""
        if accept_encoding and _accepts_gzip(accept_encoding):
            return self.gzipped, self.etag[:-1] + '-gz"', True
        return self.body, self.etag, False


def _accepts_gzip(header: str) -> bool:
    for item in header.lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison for If-None-Match (``*`` or a list of tags)."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
