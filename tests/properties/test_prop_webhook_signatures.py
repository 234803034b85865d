"""Webhook signatures made by the Rust signer (``_native.webhook_sign`` via
``webhooks.signing``), checked by the Standard Webhooks reference library
(``standardwebhooks``, as in tests/webhooks/test_signing.py).

The reference ``Webhook.verify`` accepts only UTF-8 bodies and timestamps within five
minutes of its own clock, so verified messages are stamped near now; for arbitrary
timestamps the reference ``Webhook.sign`` must produce the same signature.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from core_api.webhooks import signing

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None)
# Timestamps the reference verifier accepts: within 5 minutes of now (a margin is kept
# for the time the test takes).
OFFSETS = st.integers(-240, 240)

secrets = st.binary(min_size=1, max_size=80)
msg_ids = st.text(min_size=1, max_size=40)  # any text, dots and non-ASCII included
bodies = st.text(max_size=512).map(str.encode)  # the reference decodes the body as UTF-8


def wh_secret(key: bytes) -> str:
    """The ``whsec_`` form of a key, as the reference library reads it."""
    return "whsec_" + base64.b64encode(key).decode()


@SETTINGS
@given(keys=st.lists(secrets, min_size=1, max_size=3), msg_id=msg_ids, offset=OFFSETS, body=bodies)
def test_reference_library_verifies_every_rust_signature(
    keys: list[bytes], msg_id: str, offset: int, body: bytes
) -> None:
    ts = int(time.time()) + offset
    headers = signing.headers(keys, msg_id, ts, body)
    assert headers["webhook-signature"].count("v1,") == len(keys)
    for key in keys:  # during a rotation any live secret verifies
        assert Webhook(key).verify(body, headers, json_parse=False) is None
        assert Webhook(wh_secret(key)).verify(body, headers, json_parse=False) is None


@SETTINGS
@given(key=secrets, other=secrets, msg_id=msg_ids, offset=OFFSETS, body=bodies, data=st.data())
def test_tampering_fails_verification(
    key: bytes, other: bytes, msg_id: str, offset: int, body: bytes, data: st.DataObject
) -> None:
    ts = int(time.time()) + offset
    headers = signing.headers([key], msg_id, ts, body)
    reference = Webhook(key)

    tampered_body = data.draw(bodies.filter(lambda b: b != body), label="tampered_body")
    with pytest.raises(WebhookVerificationError):
        reference.verify(tampered_body, headers, json_parse=False)

    shift = data.draw(st.integers(-30, 30).filter(bool), label="shift")
    moved = {**headers, "webhook-timestamp": str(ts + shift)}
    with pytest.raises(WebhookVerificationError):
        reference.verify(body, moved, json_parse=False)

    renamed_id = data.draw(msg_ids.filter(lambda m: m != msg_id), label="renamed_id")
    with pytest.raises(WebhookVerificationError):
        reference.verify(body, {**headers, "webhook-id": renamed_id}, json_parse=False)

    if other != key:
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(body, headers, json_parse=False)


@SETTINGS
@given(
    key=secrets,
    msg_id=msg_ids,
    # Any second the reference library can turn into a datetime (years 1 to 9999).
    ts=st.integers(-62_135_596_800, 253_402_300_799),
    body=bodies,
)
def test_reference_library_signs_identically_at_any_timestamp(
    key: bytes, msg_id: str, ts: int, body: bytes
) -> None:
    when = datetime.fromtimestamp(ts, UTC)
    ours = signing.sign([key], msg_id, ts, body)
    assert Webhook(key).sign(msg_id, when, body.decode()) == ours
