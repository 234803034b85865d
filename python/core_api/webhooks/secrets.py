"""Endpoint signing secrets at rest: sealed with AES-GCM under a key derived from
``settings.secret_key``, bound to the endpoint's workspace (a sealed value copied into
another workspace's row does not open). They must be recoverable (they sign), so they
are encrypted rather than hashed; plain secrets exist only in memory.

During a rotation of the server secret, values sealed under the previous one
(``settings.secret_key_previous``) still open; ``core-api secrets reseal`` seals them
again under the current one (:mod:`core_api.webhooks.reseal`)."""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_LABEL = b"webhook-secrets-v1"
_NONCE_BYTES = 12


class SecretBox:
    def __init__(self, secret_key: bytes, previous_key: bytes | None = None) -> None:
        self._cipher = AESGCM(_derive(secret_key))
        self._previous = None if previous_key is None else AESGCM(_derive(previous_key))

    def seal(self, workspace_id: int, secret: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._cipher.encrypt(nonce, secret.encode(), _bound(workspace_id))

    def open(self, workspace_id: int, sealed: bytes) -> str:
        """The plain secret; raises InvalidTag (or ValueError) when neither the current
        nor the previous secret key sealed it (for this workspace)."""
        return self.open_checked(workspace_id, sealed)[0]

    def open_checked(self, workspace_id: int, sealed: bytes) -> tuple[str, bool]:
        """``(plain secret, sealed under the current key)``."""
        nonce, data, bound = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _bound(workspace_id)
        try:
            return self._cipher.decrypt(nonce, data, bound).decode(), True
        except InvalidTag:
            if self._previous is None:
                raise
        return self._previous.decrypt(nonce, data, bound).decode(), False


def _derive(secret_key: bytes) -> bytes:
    return hmac.digest(secret_key, _LABEL, "sha256")


def _bound(workspace_id: int) -> bytes:
    return f"webhook-endpoint:{workspace_id}".encode()
