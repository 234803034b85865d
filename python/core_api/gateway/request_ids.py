"""Request ids: the client's ``X-Request-ID`` when it is sane, else one of ours.

Resolved lazily (first asked for by the error handler or when headers are written) so
that no middleware hook runs just to make one.
"""

from __future__ import annotations

import itertools
import os
import re

import falcon.asgi

_SANE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")  # fullmatch: "$" would let "id\n" through
# req_ + a random per-process prefix + a counter: unique without a syscall per request.
_PREFIX = "req_" + os.urandom(6).hex()
_COUNTER = itertools.count(1)


def request_id(req: falcon.asgi.Request) -> str:
    known: str | None = req.context.get("request_id")
    if known is None:
        known = req.context.request_id = from_header(req.get_header("X-Request-ID"))
    return known


def from_header(incoming: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane, else a new id."""
    return incoming if incoming and _SANE.fullmatch(incoming) else f"{_PREFIX}{next(_COUNTER):012x}"
