"""API-key format round-trip (rust/keys.rs through core_api._native).

docs/api.md: ``sk_live_`` + 32 base62 + 6 base62 CRC32 (46 characters), stored as
HMAC-SHA256(pepper, key); a key whose shape or checksum is wrong is refused without a
lookup. ``KeyCache.lookup`` is the parse: a well-formed key comes back hashed, a malformed
one as ``(b"", None)``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import string
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from core_api import _native

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)
KEY_RE = re.compile(r"sk_live_[0-9A-Za-z]{32}[0-9A-Za-z]{6}")
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
PEPPER = b"property-test-pepper-0123456789abcdef"
CACHE = _native.KeyCache(PEPPER, 64)


def base62_decode(text: str) -> int:
    value = 0
    for c in text:
        value = value * 62 + BASE62.index(c)
    return value


def parse(key: str) -> bytes:
    """The hash the service would look up, or b"" when the key is refused unhashed."""
    key_hash, value = CACHE.lookup(key, 0, 0)
    assert value is None  # nothing is ever inserted
    return key_hash


def reference_hash(key: str) -> bytes:
    return hmac.new(PEPPER, key.encode(), hashlib.sha256).digest()


keys = st.builds(lambda _: _native.generate_key(), st.integers())  # one fresh key each


def key_from(secret: str) -> str:
    body = "sk_live_" + secret
    crc = zlib.crc32(body.encode())
    digits = ""
    for _ in range(6):
        crc, d = divmod(crc, 62)
        digits = BASE62[d] + digits
    return body + digits


@SETTINGS
@given(key=keys)
def test_generated_keys_have_the_documented_format_and_round_trip(key: str) -> None:
    assert len(key) == 46 and KEY_RE.fullmatch(key)
    body, checksum = key[:40], key[40:]
    assert base62_decode(checksum) == zlib.crc32(body.encode())
    assert _native.key_prefix(key) == key[:11] and key[:11].startswith("sk_live_")
    assert parse(key) == _native.hash_key(PEPPER, key) == reference_hash(key)
    assert len(parse(key)) == 32


@SETTINGS
@given(secret=st.text(alphabet=BASE62, min_size=32, max_size=32))
def test_any_secret_with_its_crc_is_accepted(secret: str) -> None:
    key = key_from(secret)
    assert parse(key) == reference_hash(key)


@SETTINGS
@given(key=keys, data=st.data())
def test_one_changed_character_is_refused(key: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, 45), label="index")
    replacement = data.draw(
        st.one_of(st.sampled_from(BASE62 + "_-+/=. \n\x00"), st.characters()).filter(
            lambda c: c != key[i]
        ),
        label="replacement",
    )
    mutated = key[:i] + replacement + key[i + 1 :]
    # CRC32 catches every single-character change; the prefix and charset are checked.
    assert parse(mutated) == b""
    assert reference_hash(mutated) != reference_hash(key)


@SETTINGS
@given(key=keys, data=st.data())
def test_truncated_or_extended_keys_are_refused(key: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, 45), label="cut")
    assert parse(key[:cut]) == b""
    tail = data.draw(st.text(min_size=1, max_size=8), label="tail")
    assert parse(key + tail) == b""
    assert parse(tail + key) == b""


@SETTINGS
@given(key=keys, data=st.data())
def test_non_ascii_keys_are_refused(key: str, data: st.DataObject) -> None:
    char = data.draw(st.characters(min_codepoint=0x80), label="char")
    i = data.draw(st.integers(0, 45), label="index")
    # Same character count, more bytes; and the same byte length where possible.
    assert parse(key[:i] + char + key[i + 1 :]) == b""
    width = len(char.encode())
    if i + width <= 46:
        same_bytes = key[:i] + char + key[i + width :]
        assert len(same_bytes.encode()) == 46
        assert parse(same_bytes) == b""


@SETTINGS
@given(text=st.text(max_size=60))
def test_arbitrary_text_is_accepted_only_when_well_formed(text: str) -> None:
    well_formed = KEY_RE.fullmatch(text) is not None and base62_decode(text[40:]) == zlib.crc32(
        text[:40].encode()
    )
    assert (parse(text) != b"") is well_formed
    assert _native.key_prefix(text) == text[:11]


@SETTINGS
@given(a=keys, b=keys)
def test_distinct_keys_hash_apart_and_compare_unequal(a: str, b: str) -> None:
    assert a != b
    ha, hb = parse(a), parse(b)
    assert ha != hb
    assert _native.constant_time_eq(ha, parse(a))
    assert not _native.constant_time_eq(ha, hb)


@SETTINGS
@given(key=keys, data=st.data())
def test_a_stored_key_is_found_only_by_itself(key: str, data: st.DataObject) -> None:
    cache = _native.KeyCache(PEPPER, 8)
    key_hash, missing = cache.lookup(key, 1, 0)
    assert missing is None
    principal = object()
    cache.insert(key_hash, 1, principal, 1)
    assert cache.lookup(key, 1, 0) == (key_hash, principal)
    i = data.draw(st.integers(0, 45), label="index")
    change = data.draw(st.characters().filter(lambda c: c != key[i]), label="change")
    for other in (key[:i] + change + key[i + 1 :], key[:i], key + change, key.upper()):
        if other != key:
            found = cache.lookup(other, 1, 0)
            assert found[1] is None
            assert found[0] in (b"", reference_hash(other)) and found[0] != key_hash
