"""Outbound HTTP for webhook deliveries, safe against server-side request forgery.

An endpoint URL is chosen by a tenant, so a delivery must never reach this host or the
networks behind it. Three checks, unless ``settings.webhook_allow_private_networks``:

- at create/update time, :func:`url_problem` (syntax, scheme, literal internal IPs,
  internal host names) and :func:`resolve_problem` (what the name resolves to now);
- at delivery time, the resolver refuses a name with any internal address, and the socket
  factory checks the address each socket is about to connect to. That last check is on
  the IP actually connected to, so a DNS answer that changes after the create-time
  check (DNS rebinding), a cached answer or a literal IP cannot slip through.

Redirects are never followed (a 3xx is a failure: following one would bypass the
checks). Every attempt is bounded by one total timeout, and at most 4 KiB of the
response body is read. :meth:`Transport.post` never raises for network trouble: the
:class:`Outcome` says what happened.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "BODY_LIMIT",
    "MAX_TIMEOUT_S",
    "MAX_URL_LENGTH",
    "BlockedAddressError",
    "Outcome",
    "Transport",
    "is_blocked_address",
    "parse_retry_after",
    "resolve_problem",
    "url_problem",
]

BODY_LIMIT = 4096  # bytes of a response body kept (and read)
MAX_URL_LENGTH = 2048
MAX_TIMEOUT_S = 30.0  # one attempt, whatever the caller asks
RESOLVE_TIMEOUT_S = 3.0  # a create-time DNS lookup that takes longer is not judged
_ERROR_LIMIT = 300  # characters of an error description
USER_AGENT = "core-api-webhooks/1"

# Addresses no tenant may reach. ``is_global`` already excludes RFC 1918, loopback,
# link-local (169.254/16 with the cloud metadata address, fe80::/10), 100.64/10, ULA
# fc00::/7, unspecified and reserved ranges; the explicit list keeps the rule independent
# of the Python version's tables, and multicast is refused although some is "global".
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/8",  # unspecified, loopback, IPv4-compatible ::a.b.c.d, SIIT
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # no spaces, controls or non-ASCII
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Cloud metadata services' names (their addresses are link-local and refused anyway).
_INTERNAL_NAMES = frozenset(
    {
        "localhost",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "kubernetes.default",
        "kubernetes.default.svc",
    }
)


def is_blocked_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True if ``address`` is internal: private, loopback, link-local, CGNAT, ULA,
    multicast, unspecified or reserved, including IPv6 forms that embed such an IPv4
    address (IPv4-mapped, 6to4, NAT64) and IPv4-compatible ones (all of ``::/8``).
    Unparsable text counts as blocked."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or _nat64_embedded(ip) or ip
    if ip.is_multicast or ip.is_reserved or not ip.is_global:
        return True
    return any(ip in network for network in _BLOCKED_NETWORKS)


def _nat64_embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _internal_name(host: str) -> bool:
    host = host.rstrip(".").lower()
    return host in _INTERNAL_NAMES or host.endswith(".localhost")


def _legacy_numeric(host: str) -> bool:
    """A host that is not a name but a legacy numeric IPv4 form (``2130706433``,
    ``127.1``, ``0x7f.1``): the resolver would map it onto an address."""
    last = host.rstrip(".").rsplit(".", 1)[-1].lower()
    return last.isdigit() or (last.startswith("0x") and last != "0x")


INTERNAL_TARGET = "must not point to"


def url_problem(url: str, settings: Settings) -> str | None:
    """Why ``url`` cannot be a webhook endpoint (a message for a 422), or None.

    Syntax only, no DNS: see :func:`resolve_problem` for what the name resolves to.
    """
    if not isinstance(url, str) or not url:
        return "must be a URL"
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    return _url_problem(
        url, settings.webhook_require_https, settings.webhook_allow_private_networks
    )


# Every delivery re-checks its URL; endpoints are few, so the verdicts are cached.
@functools.lru_cache(maxsize=4096)
def _url_problem(url: str, require_https: bool, allow_private: bool) -> str | None:
    if _PRINTABLE.fullmatch(url) is None:
        return "must contain only printable ASCII characters (encode the rest)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL (check the host and port)"
    schemes = ("https",) if require_https else ("http", "https")
    if parts.scheme.lower() not in schemes:
        return "must use https" if require_https else "must use http or https"
    if "@" in parts.netloc:
        return "must not contain a user name or password"
    host = parts.hostname
    if not host:
        return "must include a host"
    if port == 0:
        return "is not a valid URL (check the host and port)"
    ip = _literal_ip(host)
    if ip is None:
        if _legacy_numeric(host):
            return "must use a host name or a canonical IP address"
        if not _valid_name(host):
            return "is not a valid URL (check the host and port)"
    if allow_private:
        return None
    if ip is not None and is_blocked_address(ip):
        return f"{INTERNAL_TARGET} a private, loopback, link-local or other internal address"
    if ip is None and _internal_name(host):
        return f"{INTERNAL_TARGET} an internal host name"
    return None


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _valid_name(host: str) -> bool:
    name = host.rstrip(".")
    if not name or len(name) > 253:
        return False
    return all(
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(c.isalnum() or c in "-_" for c in label)
        for label in name.split(".")
    )


async def resolve_problem(url: str, settings: Settings) -> str | None:
    """:func:`url_problem`, then DNS: a name with any internal address is refused.

    A name that does not resolve now (or not within a few seconds) is accepted: the
    delivery-time checks still apply to whatever it resolves to later.
    """
    problem = url_problem(url, settings)
    if problem is not None or settings.webhook_allow_private_networks:
        return problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _literal_ip(host) is not None:
        return None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return None
    if any(is_blocked_address(str(info[4][0])) for info in infos):
        return "must not resolve to a private, loopback, link-local or other internal address"
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date), or
    None if absent or unparsable. A date in the past gives 0."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text[:10])) if len(text) <= 10 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(slots=True)
class Outcome:
    """What one delivery attempt came to.

    ``status`` is the HTTP status, None if no response arrived. ``error`` is None when a
    response arrived and was read, else a short description (``timeout``, ``blocked``,
    ``connect``, ``dns``, ``tls``, ``protocol``, ``redirect``: a 3xx is never followed and
    is a failure). ``body`` holds at most the first 4 KiB of the response, decoded as
    UTF-8 with replacement. Success is :attr:`ok`: no error and a 2xx status.
    """

    status: int | None
    body: str
    duration_ms: int
    error: str | None
    retry_after_s: float | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


class BlockedAddressError(OSError):
    """A connection to an internal address was refused."""


class _GuardedResolver(AbstractResolver):
    """The system resolver, refusing a name if any of its addresses is internal (one
    internal address is enough: connection attempts fall through the list)."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if _internal_name(host):
            raise BlockedAddressError(f"blocked: {host} is an internal host name")
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if is_blocked_address(result["host"]):
                raise BlockedAddressError(f"blocked: {host} resolves to an internal address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def _guarded_socket(addr_info: Any) -> socket.socket:
    """The socket factory: checks the address this socket is about to connect to."""
    family, type_, proto, _, address = addr_info
    if is_blocked_address(str(address[0])):
        raise BlockedAddressError(f"blocked: refusing to connect to {address[0]}")
    return socket.socket(family=family, type=type_, proto=proto)


class Transport:
    """One pooled HTTP client for all deliveries of a process (keep-alive per host).

    ``max_connections`` bounds open connections in all, ``per_host`` per (host, port).
    Create it anywhere; the session starts on the first :meth:`post` (inside the loop).
    """

    def __init__(
        self, settings: Settings, *, max_connections: int = 100, per_host: int = 16
    ) -> None:
        self._guarded = not settings.webhook_allow_private_networks
        self._settings = settings
        self._max_connections = max_connections
        self._per_host = per_host
        self._session: aiohttp.ClientSession | None = None

    def _make_resolver(self) -> AbstractResolver:
        return _GuardedResolver() if self._guarded else aiohttp.ThreadedResolver()

    def _make_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=self._per_host,
            resolver=self._make_resolver(),
            socket_factory=_guarded_socket if self._guarded else None,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookies carried between endpoints
            trust_env=False,  # never a proxy from the environment
            auto_decompress=True,
        )

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout_s: float
    ) -> Outcome:
        """POST ``body`` to ``url``; the whole attempt takes at most ``timeout_s`` (kept
        within 1 ms..30 s: a zero or negative total would mean no timeout to aiohttp)."""
        started = time.perf_counter()
        timeout_s = min(max(timeout_s, 0.001), MAX_TIMEOUT_S)
        problem = url_problem(url, self._settings)
        if problem is not None:  # an internal target reads as the other refusals do
            kind = "blocked" if problem.startswith(INTERNAL_TARGET) else "invalid url"
            return _failed(started, f"{kind}: {problem}")
        if self._session is None:
            self._session = self._make_session()
        sent = dict(headers)
        present = {k.lower() for k in sent}
        if "content-type" not in present:
            sent["Content-Type"] = "application/json"
        if "user-agent" not in present:
            sent["User-Agent"] = USER_AGENT
        status: int | None = None
        retry_after: float | None = None
        chunk = b""
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
            async with self._session.post(
                url, data=body, headers=sent, allow_redirects=False, timeout=timeout
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                chunk = await _read_prefix(response, BODY_LIMIT)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            error: str | None = f"timeout: no complete response within {timeout_s:g}s"
        except aiohttp.ClientError as e:
            error = _describe(e)
        except OSError as e:  # not wrapped by aiohttp (should not happen): still an outcome
            error = _describe(e)
        else:
            error = None
            if 300 <= status < 400:
                error = f"redirect: {status} not followed"
        return Outcome(
            status=status,
            body=chunk.decode("utf-8", "replace"),
            duration_ms=_elapsed_ms(started),
            error=error,
            retry_after_s=retry_after,
        )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the body; the rest is never read (the connection is
    then closed rather than reused)."""
    data = bytearray()
    while len(data) < limit:
        part = await response.content.read(limit - len(data))
        if not part:
            break
        data += part
    return bytes(data)


def _describe(e: BaseException) -> str:
    blocked = _find_blocked(e)
    if blocked is not None:
        text = str(blocked)
    elif isinstance(e, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        text = f"tls: {e}"
    elif isinstance(e, aiohttp.ClientConnectorDNSError):
        text = f"dns: could not resolve {e.host}"
    elif isinstance(e, aiohttp.ClientConnectorError):
        text = f"connect: {e.os_error.strerror or e.os_error}"
    elif isinstance(e, aiohttp.InvalidURL):
        text = f"invalid url: {e}"
    elif isinstance(e, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        text = f"protocol: {e}"
    elif isinstance(e, aiohttp.ServerDisconnectedError):
        text = "protocol: server disconnected before responding"
    else:
        text = f"network: {type(e).__name__}: {e}"
    return text[:_ERROR_LIMIT]


def _find_blocked(e: BaseException | None) -> BaseException | None:
    """The BlockedAddressError behind ``e``, however aiohttp wrapped it."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, BlockedAddressError):
            return e
        if isinstance(e, aiohttp.ClientConnectorError) and isinstance(
            e.os_error, BlockedAddressError
        ):
            return e.os_error
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _failed(started: float, error: str) -> Outcome:
    return Outcome(None, "", _elapsed_ms(started), error[:_ERROR_LIMIT], None)
