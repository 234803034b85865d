"""The receiver-side verify(): what it accepts (our and the reference library's
signatures, either secret during rotation) and everything it refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from core_api.webhooks import signing
from core_api.webhooks.verify import WebhookVerificationError, verify

NOW = 1_750_000_000
BODY = b'{"id":"evt_1","type":"api_key.created"}'


def signed(secrets: list[str], *, ts: int = NOW, body: bytes = BODY) -> dict[str, str]:
    keys = [signing.decode_secret(s) for s in secrets]
    return signing.headers(keys, "evt_1", ts, body)


def test_accepts_its_own_signature_case_insensitively() -> None:
    secret = signing.generate_secret()
    verify(secret, signed([secret]), BODY, now=NOW)
    upper = {k.upper(): v for k, v in signed([secret]).items()}
    verify(secret, upper, BODY, now=NOW)


def test_accepts_the_reference_library_signature() -> None:
    secret = signing.generate_secret()
    sig = Webhook(secret).sign("msg_x", datetime.fromtimestamp(NOW, UTC), BODY.decode())
    headers = {"Webhook-Id": "msg_x", "Webhook-Timestamp": str(NOW), "Webhook-Signature": sig}
    verify(secret, headers, BODY, now=NOW)


def test_accepts_either_secret_during_rotation_and_skips_unknown_versions() -> None:
    old, new = signing.generate_secret(), signing.generate_secret()
    headers = signed([new, old])
    verify(old, headers, BODY, now=NOW)
    verify(new, headers, BODY, now=NOW)
    headers["webhook-signature"] = "v2,abc v1a,zz= v1,!!! " + headers["webhook-signature"]
    verify(old, headers, BODY, now=NOW)


def test_tolerance_window() -> None:
    secret = signing.generate_secret()
    verify(secret, signed([secret]), BODY, now=NOW + 300)
    verify(secret, signed([secret]), BODY, now=NOW - 300)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, signed([secret]), BODY, now=NOW + 301)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(secret, signed([secret]), BODY, now=NOW - 301)
    verify(secret, signed([secret]), BODY, now=NOW + 3000, tolerance_s=3600)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.pop("webhook-id"), "missing"),
        (lambda h: h.pop("webhook-timestamp"), "missing"),
        (lambda h: h.pop("webhook-signature"), "missing"),
        (lambda h: h.update({"webhook-timestamp": "17e8"}), "invalid webhook-timestamp"),
        (lambda h: h.update({"webhook-timestamp": "-1"}), "invalid webhook-timestamp"),
        (lambda h: h.update({"webhook-id": "evt_2"}), "no matching signature"),
        (lambda h: h.update({"webhook-timestamp": str(NOW + 1)}), "no matching signature"),
        (lambda h: h.update({"webhook-signature": "v1,"}), "no matching signature"),
        (lambda h: h.update({"webhook-signature": "garbage"}), "no matching signature"),
    ],
)
def test_refuses_tampered_or_incomplete_headers(change: object, message: str) -> None:
    secret = signing.generate_secret()
    headers = signed([secret])
    change(headers)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError, match=message):
        verify(secret, headers, BODY, now=NOW)


def test_refuses_another_body_or_another_secret() -> None:
    secret = signing.generate_secret()
    with pytest.raises(WebhookVerificationError):
        verify(secret, signed([secret]), BODY + b"\n", now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify(signing.generate_secret(), signed([secret]), BODY, now=NOW)


def test_a_malformed_secret_is_a_value_error() -> None:
    secret = signing.generate_secret()
    with pytest.raises(ValueError):
        verify("not-a-secret", signed([secret]), BODY, now=NOW)
