"""Verify a webhook on the receiving side (Standard Webhooks).

For receivers written in Python::

    from core_api.webhooks.verify import verify, WebhookVerificationError

    try:
        verify(secret, request.headers, raw_body)   # secret: the whsec_... shown once
    except WebhookVerificationError:
        return 400

Pass the raw request body (bytes, before any JSON parsing). Header names are matched
case-insensitively. Any of the space-separated ``v1,`` signatures may match, so a
message signed during secret rotation verifies with either the old or the new secret.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Mapping

from .signing import decode_secret, sign

__all__ = ["WebhookVerificationError", "verify"]


class WebhookVerificationError(Exception):
    """The message is not authentic or not fresh; respond 4xx and do not process it."""


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> None:
    """Return if ``body`` was signed with ``secret`` within ``tolerance_s`` of ``now``.

    Raises WebhookVerificationError otherwise (and ValueError for a malformed secret).
    """
    key = decode_secret(secret)
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, -timestamp or -signature header")
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError("invalid webhook-timestamp")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("message timestamp too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("message timestamp too new")
    expected = base64.b64decode(sign([key], msg_id, timestamp, body)[3:])
    matched = False
    for candidate in signatures.split(" "):
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        # Constant time, and every candidate is compared (no early exit on a match).
        matched |= hmac.compare_digest(given, expected)
    if not matched:
        raise WebhookVerificationError("no matching signature")
