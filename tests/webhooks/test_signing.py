"""Standard Webhooks signing: the published test vector, the reference library as the
verifier (one secret and two during rotation), and the Rust HMAC against Python's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as ReferenceError_

from core_api import _native
from core_api.webhooks import signing

# The spec's test vector (used by every reference implementation's tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def reference_sign(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_published_test_vector() -> None:
    key = signing.decode_secret(VECTOR_SECRET)
    assert signing.sign([key], VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_headers_carry_id_timestamp_and_signature() -> None:
    key = signing.decode_secret(VECTOR_SECRET)
    assert signing.headers([key], VECTOR_ID, VECTOR_TS, VECTOR_BODY) == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIG,
    }


def test_generated_secrets_are_32_random_bytes_the_reference_library_accepts() -> None:
    secrets = {signing.generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        key = signing.decode_secret(secret)
        assert len(key) == 32
        assert Webhook(secret)._whsecret == key


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"x" * 23).decode(),  # too short for the spec
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # too long
        "sk_live_" + base64.b64encode(b"x" * 32).decode(),
    ],
)
def test_decode_secret_refuses_what_is_not_a_secret(bad: str) -> None:
    with pytest.raises(ValueError):
        signing.decode_secret(bad)


def test_reference_library_verifies_one_secret() -> None:
    secret = signing.generate_secret()
    body = b'{"type":"workspace.created","data":{"id":"ws_1","name":"caf\xc3\xa9"}}'
    now = int(time.time())
    headers = signing.headers([signing.decode_secret(secret)], "evt_1", now, body)
    assert Webhook(secret).verify(body, headers)["data"]["name"] == "café"
    # The library signs the same string to the same signature.
    ours = headers["webhook-signature"]
    assert Webhook(secret).sign("evt_1", datetime.fromtimestamp(now, UTC), body.decode()) == ours
    with pytest.raises(ReferenceError_):
        Webhook(signing.generate_secret()).verify(body, headers)
    with pytest.raises(ReferenceError_):
        Webhook(secret).verify(body + b" ", headers)


def test_reference_library_verifies_either_secret_during_rotation() -> None:
    old, new = signing.generate_secret(), signing.generate_secret()
    keys = [signing.decode_secret(new), signing.decode_secret(old)]
    body = b'{"id":"evt_2"}'
    headers = signing.headers(keys, "evt_2", int(time.time()), body)
    parts = headers["webhook-signature"].split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts)
    assert Webhook(old).verify(body, headers) == {"id": "evt_2"}
    assert Webhook(new).verify(body, headers) == {"id": "evt_2"}
    with pytest.raises(ReferenceError_):
        Webhook(signing.generate_secret()).verify(body, headers)


@given(
    keys=st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=3),
    msg_id=st.text(max_size=40),
    ts=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    body=st.binary(max_size=2048),
)
def test_rust_signature_equals_python_hmac(
    keys: list[bytes], msg_id: str, ts: int, body: bytes
) -> None:
    expected = " ".join(reference_sign(k, msg_id, ts, body) for k in keys)
    assert signing.sign(keys, msg_id, ts, body) == expected


def test_native_refuses_no_secret_or_an_empty_one() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        _native.webhook_sign([], "m", 1, b"")
    with pytest.raises(ValueError, match="empty"):
        _native.webhook_sign([b"k", b""], "m", 1, b"")
    with pytest.raises(TypeError):
        _native.webhook_sign(["text"], "m", 1, b"")  # type: ignore[list-item]
