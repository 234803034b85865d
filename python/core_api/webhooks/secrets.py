"""Endpoint signing secrets at rest: sealed with AES-GCM under a key derived from
``settings.secret_key``, bound to the endpoint's workspace (a sealed value copied into
another workspace's row does not open). They must be recoverable (they sign), so they
are encrypted rather than hashed; plain secrets exist only in memory."""

from __future__ import annotations

import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_LABEL = b"webhook-secrets-v1"
_NONCE_BYTES = 12


class SecretBox:
    def __init__(self, secret_key: bytes) -> None:
        self._cipher = AESGCM(hmac.digest(secret_key, _LABEL, "sha256"))

    def seal(self, workspace_id: int, secret: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._cipher.encrypt(nonce, secret.encode(), _bound(workspace_id))

    def open(self, workspace_id: int, sealed: bytes) -> str:
        plain = self._cipher.decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _bound(workspace_id)
        )
        return plain.decode()


def _bound(workspace_id: int) -> bytes:
    return f"webhook-endpoint:{workspace_id}".encode()
