"""Static bodies built once per process (pixel.js, the OpenAPI document, the docs page and
its assets): a gzip variant and a strong ETag, and the If-None-Match comparison."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass

import falcon
import falcon.asgi


@dataclass(frozen=True, slots=True)
class StaticBody:
    body: bytes
    gzipped: bytes
    etag: str  # of the identity body; the gzipped one is etag + "-gz" (a different entity)

    @classmethod
    def of(cls, body: bytes, *, level: int = 6, tag_chars: int = 24) -> StaticBody:
        # mtime=0: the same bytes (and so the same ETag) in every process and node.
        gzipped = gzip.compress(body, compresslevel=level, mtime=0)
        return cls(body, gzipped, '"' + hashlib.sha256(body).hexdigest()[:tag_chars] + '"')

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


def send(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    payload: StaticBody,
    content_type: str,
    headers: list[tuple[str, str]],
) -> None:
    """``payload`` in the variant the request accepts, with its ETag; a 304 when the
    request already holds it. ``headers`` go on both answers."""
    body, etag, gzipped = payload.variant(req.get_header("Accept-Encoding"))
    headers = [*headers, ("ETag", etag), ("Vary", "Accept-Encoding")]
    if matches(req.get_header("If-None-Match"), etag):
        resp.status = falcon.HTTP_304
        resp.set_headers(headers)
        return
    if gzipped:
        headers.append(("Content-Encoding", "gzip"))
    resp.set_headers(headers)
    resp.content_type = content_type
    resp.data = body
