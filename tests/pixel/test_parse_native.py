"""The Rust track-body parser (``_native.pixel_parse_hit``, rust/pixel_hit.rs) is a fast
twin of ``parse_hit``: whenever it answers, it answers exactly what ``parse_hit`` does;
when it does not (None), the Python version decides. It must answer the bodies that
pixel.js and real browsers send, or it would be a slow path with extra steps."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core_api._native import pixel_parse_hit
from core_api.errors import ValidationFailed
from core_api.pixel.ingest import MAX_PROP_VALUE, parse_hit

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def python(body: bytes) -> tuple[Any, ...] | None:
    """``parse_hit`` as the fast path calls it: the Hit's fields, or None for a 422."""
    try:
        return dataclasses.astuple(parse_hit(orjson.loads(body)))
    except (orjson.JSONDecodeError, ValidationFailed):
        return None


def test_common_bodies_are_answered_in_rust() -> None:
    bodies = [
        {"url": "https://shop.example/"},
        {"event": "pageview", "url": "https://shop.example/blog/post-1?utm=x",
         "referrer": "https://www.google.com/search?q=a", "domain": "shop.example"},
        {"event": "Signup", "url": "https://www.shop.example/#/pricing", "referrer": "",
         "properties": {"plan": "Pro", "seats": 3, "trial": True, "coupon": None}},
        {"event": "pageview", "url": "http://localhost:8080/a", "user_agent": CHROME},
        {"event": "Download", "url": "https://shop.example/x",
         "properties": {"file": "r\u00e9sum\u00e9.pdf \u2603", "q": "a\nb\t\"c\"\\"}},
    ]  # fmt: skip
    for body in bodies:
        raw = orjson.dumps(body)
        native = pixel_parse_hit(raw)
        assert native is not None, body
        assert native == python(raw)


def test_what_rust_leaves_to_python_is_still_decided() -> None:
    accepted = orjson.dumps({"url": "https://shop.example/caf\u00e9", "properties": {"x": 1.5}})
    assert pixel_parse_hit(accepted) is None and python(accepted) is not None
    refused = orjson.dumps({"url": "ftp://shop.example/"})
    assert pixel_parse_hit(refused) is None and python(refused) is None


_text = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="ascii"), max_size=30),
    st.sampled_from(["", " ", "x", "a b", " x ", "\x00", "\u00e9", "\u3000x", "x\x1c"]),
    st.builds(lambda n: "y" * n, st.sampled_from([63, 64, 65, 119, 120, 121, 499, 500, 501])),
)
_urls = st.one_of(
    st.sampled_from([
        "https://shop.example/", "http://Shop.Example:8080/a/b?q=1#frag", "https://a.test",
        "https://a.test/#/route", "https://a.test/x#!/r", "https://u:p@a.test./p",
        "https://[::1]/", "https://[::1]:80/", "https://a.test:x/", "ftp://a.test/",
        "https://./", "https:///x", "https://a.test/?q=a b", "https://a.test/\u00e9",
        " https://a.test/", "https://a.test/ ", "HTTPS://A.TEST/P", "https://a_b.test/",
        "https://a.test/" + "p" * 2100, "mailto:x@a.test", "1http://a.test/", "",
    ]),
    st.builds(lambda scheme, host, path: f"{scheme}://{host}{path}",
              st.sampled_from(["http", "https", "HTTP", "ws", "a+b"]), _text, _text),
)  # fmt: skip
_scalars = st.one_of(
    st.none(), st.booleans(), _text,
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
_props = st.one_of(
    st.none(),
    _scalars,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(_text, _scalars, max_size=4),
    st.dictionaries(st.text(max_size=3), st.none() | st.integers(), min_size=29, max_size=32),
    st.dictionaries(st.just("k"), st.dictionaries(st.just("n"), st.integers()), max_size=1),
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "event": st.none() | _text | st.integers(),
        "url": _urls | st.none() | st.integers(),
        "referrer": st.none() | _urls | _text,
        "user_agent": st.none() | _text | st.just(CHROME),
        "properties": _props,
        "domain": st.none() | _text,
        "extra": st.integers(),
    },
)

_short = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
_good_urls = st.builds(
    lambda scheme, host, port, path, query, fragment: (
        f"{scheme}://{host}{port}{path}{query}{fragment}"
    ),
    st.sampled_from(["http", "https", "HTTPS", "wss"]),
    st.from_regex(r"[A-Za-z0-9._\-]{1,12}|\[[0-9a-f:.]{1,8}\]|u@[a-z]{1,4}", fullmatch=True),
    st.sampled_from(["", ":443", ":", ":x1"]),
    st.sampled_from(["", "/", "/a/b", "/caf\u00e9", "/a b", "/" + "p" * 2050]),
    st.sampled_from(["", "?", "?q=1", "?q=a b", "?x#y"]),
    st.sampled_from(["", "#", "#top", "#/route", "#!/r", "#/a#b"]),
)
_likely = st.fixed_dictionaries(
    {"url": _good_urls},
    optional={
        "event": st.none() | _short | _text,
        "referrer": st.none() | st.just("") | _good_urls | _short,
        "user_agent": st.none() | _short | st.just(CHROME),
        "properties": st.none() | st.dictionaries(_short | _text, _scalars, max_size=5) | _props,
        "domain": st.none() | _short,
    },
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_likely, _likely, _likely, _fields), st.booleans())
@example({"url": "https://a.test/", "properties": {"s": "x" * MAX_PROP_VALUE}}, False)
@example({"url": "https://a.test/", "properties": {f"k{i}": "v" * 80 for i in range(26)}}, False)
@example({"url": "https://a.test/", "properties": {"\x01\x1f\x7f\u2028": "\x08\x0c\u00e9"}}, False)
def test_rust_never_disagrees_with_python(fields: dict[str, Any], ascii: bool) -> None:
    raw = json.dumps(fields, ensure_ascii=ascii).encode()  # any integer, escaped or not
    native = pixel_parse_hit(raw)
    if native is not None:
        assert native == python(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_arbitrary_bytes(raw: bytes) -> None:
    native = pixel_parse_hit(raw)
    if native is not None:
        assert native == python(raw)


def python_headers(raw: list[tuple[bytes, bytes]], max_body: int) -> tuple[Any, ...] | None:
    """What the fast path read from the scope before ``pixel_headers`` (a dict, last value
    wins, then the content type and length rules)."""
    wanted = set(HEADER_NAMES[:8])
    headers = {k: v for k, v in raw if k in wanted}
    content_type = headers.get(b"content-type", b"")
    media = content_type.split(b";", 1)[0].strip().lower()
    length = headers.get(b"content-length")
    if media not in {b"", b"application/json", b"text/plain"}:
        return None
    if length is None or not length.isdigit() or int(length) > max_body:
        return None
    return (
        int(length),
        headers.get(b"user-agent", b""),
        *(headers.get(k) for k in (b"origin", b"dnt", b"sec-gpc", b"x-forwarded-for")),
        headers.get(b"x-request-id"),
    )


HEADER_NAMES = [
    b"content-type",
    b"content-length",
    b"user-agent",
    b"origin",
    b"dnt",
    b"sec-gpc",
    b"x-forwarded-for",
    b"x-request-id",
    b"host",  # not read
    b"accept",
]
HEADER_VALUES = [
    b"",
    b"text/plain",
    b"text/plain;charset=UTF-8",
    b" Application/JSON ; q",
    b"\x0btext/plain\x0c",
    b"\xa0text/plain",
    b"text/html",
    b"150",
    b"0",
    b"8193",
    b"99999999999999999999999",
    b"-1",
    b"1 ",
    b"\xd9\xa1",
    b"\xef\xbc\x91",
    b"https://a.example",
    CHROME.encode(),
]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(HEADER_VALUES) | st.binary()),
        max_size=12,
    )
)
def test_pixel_headers_read_the_scope_as_the_python_version(raw: list[Any]) -> None:
    """``pixel_headers`` (Rust) reads what the fast path read with a dict before it."""
    from core_api._native import pixel_headers

    assert pixel_headers(raw, 8192) == python_headers(raw, 8192)
