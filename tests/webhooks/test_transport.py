"""The outbound transport against real loopback receivers: signed deliveries the reference
library verifies, bounded bodies and timeouts, redirects not followed, Retry-After, and
every kind of internal target refused (by URL, by DNS answer and at connect time)."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook

from core_api.config import Settings
from core_api.webhooks import signing
from core_api.webhooks.transport import (
    BODY_LIMIT,
    Transport,
    _GuardedResolver,
    is_blocked_address,
    parse_retry_after,
    resolve_problem,
    url_problem,
)
from support import free_port

# Loopback receivers need both relaxations; STRICT refuses internal targets but still
# allows http, so a refused loopback URL is refused by the guard and not by the scheme.
OPEN = Settings(webhook_allow_private_networks=True, webhook_require_https=False)
STRICT = Settings(webhook_require_https=False)
BODY = b'{"id":"evt_1","type":"workspace.created","data":{"name":"caf\xc3\xa9"}}'


class Receiver:
    """An aiohttp server on 127.0.0.1 recording every request it gets."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, dict[str, str], bytes]] = []
        self.peers: list[int] = []
        self.active = 0
        self.peak = 0
        self.release = asyncio.Event()
        self.port = 0
        self.scheme = "http"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    @web.middleware
    async def record(self, request: web.Request, handler: object) -> web.StreamResponse:
        self.hits.append((request.path, dict(request.headers), await request.read()))
        self.peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await handler(request)  # type: ignore[operator, no-any-return]
        finally:
            self.active -= 1

    async def ok(self, request: web.Request) -> web.Response:
        return web.Response(body=LONG_BODY)

    async def status(self, request: web.Request) -> web.Response:
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(status=int(request.match_info["code"]), headers=headers)

    async def redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/ok"})

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.wait_for(self.release.wait(), 30)
        return web.Response(text="late")

    async def drip(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b"0123456789")
        await asyncio.wait_for(self.release.wait(), 30)
        return response

    async def hold(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(status=204)


# 3 bytes per character, so the 4 KiB cut falls inside one: decoded with replacement.
LONG_BODY = ("€" * 4000).encode()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with _serve() as r:
        yield r


class _serve:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.r = Receiver()

    async def __aenter__(self) -> Receiver:
        r = self.r
        app = web.Application(middlewares=[r.record])
        app.router.add_post("/ok", r.ok)
        app.router.add_post("/status/{code}", r.status)
        app.router.add_post("/redirect", r.redirect)
        app.router.add_post("/slow", r.slow)
        app.router.add_post("/drip", r.drip)
        app.router.add_post("/hold", r.hold)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        r.port = self.runner.addresses[0][1]
        r.scheme = "https" if self.ssl_context else "http"
        return r

    async def __aexit__(self, *exc: object) -> None:
        self.r.release.set()
        await self.runner.cleanup()


async def post(settings: Settings, url: str, *, timeout_s: float = 5.0, body: bytes = BODY):  # type: ignore[no-untyped-def]
    transport = Transport(settings)
    try:
        return await transport.post(url, {}, body, timeout_s)
    finally:
        await transport.close()


# --- deliveries --------------------------------------------------------------------------


async def test_signed_delivery_verified_by_the_reference_library_with_either_secret(
    receiver: Receiver,
) -> None:
    old, new = signing.generate_secret(), signing.generate_secret()
    keys = [signing.decode_secret(new), signing.decode_secret(old)]
    headers = signing.headers(keys, "evt_1", int(time.time()), BODY)
    transport = Transport(OPEN)
    try:
        outcome = await transport.post(receiver.url("/ok"), headers, BODY, 5)
    finally:
        await transport.close()
    assert outcome.ok and outcome.status == 200 and outcome.error is None
    assert outcome.retry_after_s is None and 0 <= outcome.duration_ms < 5000
    [(path, got_headers, got_body)] = receiver.hits
    assert path == "/ok" and got_body == BODY
    assert got_headers["Content-Type"] == "application/json"
    assert got_headers["User-Agent"].startswith("core-api-webhooks")
    assert "Cookie" not in got_headers
    for secret in (old, new):
        assert Webhook(secret).verify(got_body, got_headers)["data"]["name"] == "café"


async def test_response_body_is_cut_at_4_kib(receiver: Receiver) -> None:
    outcome = await post(OPEN, receiver.url("/ok"))
    assert outcome.body == LONG_BODY[:BODY_LIMIT].decode("utf-8", "replace")
    assert outcome.body.startswith("€" * 1365) and outcome.body.endswith("\ufffd")


@pytest.mark.parametrize("code", [201, 204, 400, 410, 500, 503])
async def test_any_status_is_a_response_and_only_2xx_is_ok(receiver: Receiver, code: int) -> None:
    outcome = await post(OPEN, receiver.url(f"/status/{code}"))
    assert outcome.status == code and outcome.error is None
    assert outcome.ok is (code < 300)


async def test_a_redirect_is_not_followed_and_fails(receiver: Receiver) -> None:
    outcome = await post(OPEN, receiver.url("/redirect"))
    assert outcome.status == 302 and not outcome.ok
    assert outcome.error is not None and outcome.error.startswith("redirect:")
    assert [hit[0] for hit in receiver.hits] == ["/redirect"]  # /ok never reached


async def test_a_silent_receiver_is_cut_at_the_timeout(receiver: Receiver) -> None:
    started = time.monotonic()
    outcome = await post(OPEN, receiver.url("/slow"), timeout_s=0.5)
    assert time.monotonic() - started < 2.0
    assert outcome.status is None and outcome.error is not None
    assert outcome.error.startswith("timeout:") and 400 <= outcome.duration_ms < 2000


@pytest.mark.parametrize("asked", [0.0, -1.0])
async def test_a_zero_or_negative_timeout_still_bounds(receiver: Receiver, asked: float) -> None:
    started = time.monotonic()
    outcome = await post(OPEN, receiver.url("/slow"), timeout_s=asked)
    assert time.monotonic() - started < 2.0
    assert outcome.error is not None and outcome.error.startswith("timeout:")


async def test_a_dripping_body_is_cut_at_the_timeout(receiver: Receiver) -> None:
    started = time.monotonic()
    outcome = await post(OPEN, receiver.url("/drip"), timeout_s=0.5)
    assert time.monotonic() - started < 2.0
    assert outcome.status == 200 and not outcome.ok
    assert outcome.error is not None and outcome.error.startswith("timeout:")


async def test_retry_after_seconds_and_http_date(receiver: Receiver) -> None:
    outcome = await post(OPEN, receiver.url("/status/429?retry_after=120"))
    assert outcome.status == 429 and outcome.retry_after_s == 120.0
    when = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60), True)
    outcome = await post(OPEN, receiver.url(f"/status/503?retry_after={quote(when)}"))
    assert outcome.retry_after_s is not None and 55 <= outcome.retry_after_s <= 61
    outcome = await post(OPEN, receiver.url("/status/503?retry_after=soon"))
    assert outcome.status == 503 and outcome.retry_after_s is None


def test_parse_retry_after() -> None:
    now = 1_750_000_000.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(" 30 ") == 30.0
    assert parse_retry_after("-5") is None
    assert parse_retry_after("1.5") is None
    assert parse_retry_after("9" * 5000) is None
    assert parse_retry_after("") is None
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(date, now=now) == 90.0
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Wed, 99 Foo 2015 07:28:00 GMT", now=now) is None


async def test_connection_refused_is_an_outcome() -> None:
    outcome = await post(OPEN, f"http://127.0.0.1:{free_port()}/x")
    assert outcome.status is None and outcome.error is not None
    assert outcome.error.startswith("connect:")


async def test_a_non_http_answer_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SMTP ready, not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await post(OPEN, f"http://127.0.0.1:{port}/x")
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.status is None and outcome.error is not None
    assert outcome.error.startswith("protocol:")


async def test_an_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    async with _serve(_self_signed(tmp_path)) as r:
        outcome = await post(Settings(webhook_allow_private_networks=True), r.url("/ok"))
    assert outcome.status is None and outcome.error is not None
    assert outcome.error.startswith("tls:")
    assert r.hits == []


async def test_connections_are_bounded(receiver: Receiver) -> None:
    transport = Transport(OPEN, max_connections=2, per_host=2)
    try:
        outcomes = await asyncio.gather(
            *(transport.post(receiver.url("/hold"), {}, BODY, 5) for _ in range(6))
        )
    finally:
        await transport.close()
    assert all(o.status == 204 and o.ok for o in outcomes)
    assert len(receiver.hits) == 6 and receiver.peak == 2


async def test_connections_are_reused(receiver: Receiver) -> None:
    transport = Transport(OPEN)
    try:
        for _ in range(5):
            assert (await transport.post(receiver.url("/status/200"), {}, BODY, 5)).ok
    finally:
        await transport.close()
    assert len(receiver.hits) == 5 and len(set(receiver.peers)) == 1  # one keep-alive socket


# --- refusing internal targets -----------------------------------------------------------

# Legacy numeric forms of 127.0.0.1 that resolvers still map onto the address.
LEGACY_NUMERIC = ("2130706433", "127.1", "0x7f.0.0.1", "017700000001")
INTERNAL_HOSTS = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.1.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "[::1]",
    "[::]",
    "[fc00::1]",
    "[fd12:3456::1]",  # ULA
    "[fe80::1]",  # link-local
    "[ff02::1]",  # multicast
    "[::ffff:127.0.0.1]",  # IPv4-mapped forms
    "[::ffff:10.0.0.1]",
    "[::ffff:169.254.169.254]",
    "[::ffff:7f00:1]",
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
    "[64:ff9b:1::a00:1]",  # local-use NAT64
    "[::127.0.0.1]",  # IPv4-compatible (deprecated) forms
    "[::808:808]",
    "[::ffff:0:7f00:1]",  # SIIT
    "[5f00::1]",  # reserved, unallocated
    "localhost",
    "LOCALHOST.",
    "hooks.localhost",
    "metadata.google.internal",
    "metadata",
    *LEGACY_NUMERIC,
]


@pytest.mark.parametrize("host", INTERNAL_HOSTS)
async def test_every_internal_target_is_refused(receiver: Receiver, host: str) -> None:
    url = receiver.url("/ok", host=host)
    problem = url_problem(url, STRICT)
    assert problem is not None and "must" in problem
    assert await resolve_problem(url, STRICT) == problem
    outcome = await post(STRICT, url)
    kind = "invalid url" if host in LEGACY_NUMERIC else "blocked"  # syntax, or the guard
    assert outcome.status is None and outcome.error == f"{kind}: {problem}"
    assert receiver.hits == []
    # With private networks allowed only the legacy numeric forms stay refused (syntax).
    legacy = host in LEGACY_NUMERIC
    assert (url_problem(url, OPEN) is not None) is legacy


async def test_a_host_name_resolving_to_loopback_is_refused(receiver: Receiver) -> None:
    name = socket.gethostname()  # e.g. "vm" in /etc/hosts -> 127.0.0.1, not a listed name
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    if not any(is_blocked_address(a) for a in addresses):
        pytest.skip(f"{name} resolves to {addresses}: no internal name to test with")
    url = receiver.url("/ok", host=name)
    assert url_problem(url, STRICT) is None  # nothing wrong with the text...
    assert await resolve_problem(url, STRICT) == (
        "must not resolve to a private, loopback, link-local or other internal address"
    )  # ...but DNS says internal
    outcome = await post(STRICT, url)
    assert outcome.status is None and outcome.error is not None
    assert outcome.error == f"blocked: {name} resolves to an internal address"
    assert receiver.hits == []
    # Allowed when private networks are: the same name reaches the receiver.
    assert (await post(OPEN, url)).ok and len(receiver.hits) == 1


class LyingResolver(AbstractResolver):
    """DNS that answers 127.0.0.1 for every name (a rebinding attacker's server)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


class GuardedLies(Transport):
    def _make_resolver(self) -> AbstractResolver:
        return _GuardedResolver(LyingResolver())


class UncheckedLies(Transport):
    """As if the answer changed between the resolver's check and the connect."""

    def _make_resolver(self) -> AbstractResolver:
        return LyingResolver()


@pytest.mark.parametrize(
    ("cls", "error"),
    [
        (GuardedLies, "blocked: hooks.example.com resolves to an internal address"),
        (UncheckedLies, "blocked: refusing to connect to 127.0.0.1"),
    ],
)
async def test_dns_rebinding_is_refused_at_resolve_and_at_connect(
    receiver: Receiver, cls: type[Transport], error: str
) -> None:
    url = receiver.url("/ok", host="hooks.example.com")
    assert url_problem(url, STRICT) is None
    transport = cls(STRICT)
    try:
        outcome = await transport.post(url, {}, BODY, 5)
    finally:
        await transport.close()
    assert outcome.status is None and outcome.error == error
    assert receiver.hits == []


async def test_with_private_networks_allowed_the_lies_reach_the_receiver(
    receiver: Receiver,
) -> None:
    transport = UncheckedLies(OPEN)  # proves the test above fails for the guard's reason
    try:
        outcome = await transport.post(receiver.url("/ok", host="hooks.example.com"), {}, BODY, 5)
    finally:
        await transport.close()
    assert outcome.ok and len(receiver.hits) == 1


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"],
)
def test_public_addresses_are_not_blocked(address: str) -> None:
    assert not is_blocked_address(address)
    host = f"[{address}]" if ":" in address else address
    assert url_problem(f"https://{host}/hook", Settings()) is None


@pytest.mark.parametrize("address", ["not-an-ip", "", "1.2.3"])
def test_unparsable_addresses_count_as_blocked(address: str) -> None:
    assert is_blocked_address(address)


async def test_create_time_dns() -> None:
    # A name that does not resolve is accepted (delivery checks it again every time).
    assert await resolve_problem("https://hooks.invalid/x", Settings()) is None
    assert await resolve_problem("https://localhost/x", OPEN) is None
    assert await resolve_problem("https://93.184.216.34/x", Settings()) is None
    assert await resolve_problem("ftp://hooks.example.com/", Settings()) == "must use https"


# --- URL syntax --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "must be a URL"),
        ("https://hooks.example.com/" + "a" * 2030, "must be at most 2048 characters"),
        ("http://hooks.example.com/", "must use https"),
        ("ftp://hooks.example.com/", "must use https"),
        ("hooks.example.com/path", "must use https"),
        ("https://user:pw@hooks.example.com/", "must not contain a user name or password"),
        ("https://user@hooks.example.com/", "must not contain a user name or password"),
        ("https:///path", "must include a host"),
        ("https://", "must include a host"),
        ("https://hooks.example.com:99999/", "is not a valid URL (check the host and port)"),
        ("https://hooks.example.com:0/", "is not a valid URL (check the host and port)"),
        ("https://hooks.example.com:x/", "is not a valid URL (check the host and port)"),
        ("https://hooks example.com/", "must contain only printable ASCII characters"),
        ("https://hooks.example.com/\x00", "must contain only printable ASCII characters"),
        ("https://bücher.example/", "must contain only printable ASCII characters"),
        ("https://hooks..example.com/", "is not a valid URL (check the host and port)"),
        ("https://-bad.example.com/", "is not a valid URL (check the host and port)"),
        ("https://[::1/", "is not a valid URL (check the host and port)"),
        ("https://999.1.1.1/", "must use a host name or a canonical IP address"),
    ],
)
def test_url_syntax_problems(url: str, problem: str) -> None:
    found = url_problem(url, Settings())
    assert found is not None and found.startswith(problem)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/webhooks?x=1#frag",
        "https://hooks.example.com:8443/",
        "https://xn--bcher-kva.example/",
        "https://my_hooks.example.com./",
        "HTTPS://Hooks.Example.COM/",
    ],
)
def test_good_urls(url: str) -> None:
    assert url_problem(url, Settings()) is None


def test_http_only_when_https_is_not_required() -> None:
    assert url_problem("http://hooks.example.com/", STRICT) is None
    assert url_problem("ftp://hooks.example.com/", STRICT) == "must use http or https"


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
