"""Standard Webhooks signing (https://www.standardwebhooks.com/).

A secret is shown as ``whsec_`` + base64 of 32 random bytes; the HMAC key is the decoded
bytes. The signature is ``v1,`` + base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}"));
while a secret is being rotated every live secret signs and the header carries the
signatures space-separated (receivers accept any). The HMAC runs in Rust.
"""

from __future__ import annotations

import base64
import binascii
import secrets as _secrets
from collections.abc import Sequence

from .._native import webhook_sign

__all__ = ["PREFIX", "decode_secret", "generate_secret", "headers", "sign"]

PREFIX = "whsec_"
# The Standard Webhooks spec asks for keys of 24 to 64 bytes; ours are 32.
_MIN_KEY, _MAX_KEY, _KEY_BYTES = 24, 64, 32


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 bytes of OS randomness."""
    return PREFIX + base64.b64encode(_secrets.token_bytes(_KEY_BYTES)).decode()


def decode_secret(secret: str) -> bytes:
    """The HMAC key of ``whsec_<base64>``; ValueError if the text is not such a secret."""
    if not isinstance(secret, str) or not secret.startswith(PREFIX):
        raise ValueError(f"a webhook secret starts with {PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not _MIN_KEY <= len(key) <= _MAX_KEY:
        raise ValueError(f"a webhook secret decodes to {_MIN_KEY} to {_MAX_KEY} bytes")
    return key


def sign(secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<sig>`` per key, space-separated."""
    return webhook_sign(list(secrets), msg_id, timestamp, body)


def headers(secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery of ``body``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, body),
    }
