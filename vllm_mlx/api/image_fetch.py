"""Fetch an image URL without letting a client reach the server's own network (SSRF).

The address rule is enforced where the socket is opened, not on the URL's text::

    URL ──► host ──► resolver (DNS) ──► every address public? ──► connect to that address
     ▲                                                                    │
     └──────────── Location of a 3xx (a few at most) ◄── response ◄───────┘

:class:`GuardedBackend` is the network backend of the HTTP client: it resolves the
host itself, refuses it when any address is loopback, private, link-local,
multicast, reserved or unspecified (IPv4 and IPv6, IPv4-mapped included), connects
to a checked address and checks the peer it got. A hostname whose DNS answer
changes between a check and a connect (DNS rebinding) gains nothing: nothing
resolves it twice. Redirects are followed here, one at a time, so each hop goes
through the same check; no proxy from the environment is used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Sequence[str]]  # host name → its addresses (blocking: run in a thread)

MAX_IMAGE_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_URL_SAFE = "/%:@!$&'()*+,;=-._~"
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # embeds an IPv4 address the gateway reaches


class ImageError(ValueError):
    """An image that cannot be used; the message says why, for the client."""


@dataclass(frozen=True)
class FetchPolicy:
    """What a remote image fetch may do."""

    allow_local: bool = False  # --allow-local-image-urls: skip the address rule
    max_bytes: int = MAX_IMAGE_BYTES  # the body is not read past this
    timeout_s: float = FETCH_TIMEOUT_S  # the whole fetch, redirects included
    max_redirects: int = MAX_REDIRECTS


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is a global unicast address (what a remote image may live on)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 host itself
            return is_public(address.ipv4_mapped)
        embedded = address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    return address.is_global and not (
        site_local
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def system_resolver(host: str) -> list[str]:
    """The host's addresses from the system resolver (blocking)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


class AddressGuard:
    """Resolves hosts and says which addresses may be connected to."""

    def __init__(self, allow_local: bool, resolver: Resolver = system_resolver) -> None:
        self._allow_local = allow_local
        self._resolver = resolver

    def check(self, address: IPAddress, host: str) -> None:
        if not self._allow_local and not is_public(address):
            raise ImageError(
                f"image URL host '{host}' is a local or private address ({address}); "
                "such URLs are refused (the server's --allow-local-image-urls allows them)"
            )

    async def addresses(self, host: str) -> list[IPAddress]:
        """``host``'s addresses, every one checked: one bad address refuses the host."""
        literal = _parse_address(host)
        if literal is not None:
            found: Sequence[str] = [str(literal)]
        else:
            try:
                found = await asyncio.to_thread(self._resolver, host)
            except (OSError, UnicodeError) as exc:
                raise ImageError(f"image URL host '{host}' could not be resolved") from exc
        parsed = [_parse_address(a) for a in found]
        addresses = [a for a in parsed if a is not None]
        if not addresses:
            raise ImageError(f"image URL host '{host}' could not be resolved")
        for address in addresses:
            self.check(address, host)
        return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that only opens connections to addresses the guard allows."""

    def __init__(self, guard: AddressGuard, inner: httpcore.AsyncNetworkBackend) -> None:
        self._guard = guard
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self._guard.addresses(host):
            try:
                stream = await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            try:
                self._check_peer(stream, host)
            except ImageError:
                await stream.aclose()
                raise
            return stream
        raise failure or httpcore.ConnectError(f"cannot connect to {host}")

    def _check_peer(self, stream: httpcore.AsyncNetworkStream, host: str) -> None:
        # The address the socket really reached: a backend that resolved on its own
        # (or a NAT-ing stub) cannot slip past the rule.
        peer = stream.get_extra_info("server_addr")
        address = _parse_address(str(peer[0])) if peer else None
        if address is not None:
            self._guard.check(address, host)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("image fetches never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True)
class _Target:
    url: str  # as sent, fragment dropped
    host_header: str


def _target(url: str) -> _Target:
    """``url`` checked for what a fetch may name: http(s), a host, no credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ImageError("image URL is not a valid URL") from exc
    if parts.scheme not in ("http", "https"):
        raise ImageError("image URL must be http(s) or a data: URL")
    if not parts.hostname:
        raise ImageError("image URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ImageError("image URL must not hold credentials")
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ImageError("image URL host is not a valid host name") from exc
    shown = f"[{host}]" if ":" in host else host
    netloc = shown if port is None else f"{shown}:{port}"
    # Percent-encode what may not travel raw (non-ASCII, spaces, CR/LF); '%' stays as sent.
    path = quote(parts.path or "/", safe=_URL_SAFE)
    query = f"?{quote(parts.query, safe=_URL_SAFE + '?')}" if parts.query else ""
    return _Target(f"{parts.scheme}://{netloc}{path}{query}", netloc)


class ImageFetcher:
    """GETs image URLs under a :class:`FetchPolicy`; returns the body's bytes."""

    def __init__(
        self,
        policy: FetchPolicy,
        resolver: Resolver = system_resolver,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        guard = AddressGuard(policy.allow_local, resolver)
        self._backend = GuardedBackend(guard, backend or httpcore.AnyIOBackend())

    async def fetch(self, url: str) -> bytes:
        """The image at ``url``, following up to ``max_redirects`` redirects; ImageError if not."""
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._follow(url)
        except TimeoutError as exc:
            raise ImageError(
                f"image URL did not answer within {self.policy.timeout_s:g} s"
            ) from exc

    async def _follow(self, url: str) -> bytes:
        async with httpcore.AsyncConnectionPool(network_backend=self._backend) as pool:
            for _ in range(self.policy.max_redirects + 1):
                target = _target(url)
                location = await self._get(pool, target)
                if isinstance(location, bytes):
                    return location
                url = urljoin(target.url, location)
        raise ImageError(f"image URL redirected more than {self.policy.max_redirects} times")

    async def _get(self, pool: httpcore.AsyncConnectionPool, target: _Target) -> bytes | str:
        """The body, or the Location of a redirect."""
        t = self.policy.timeout_s
        headers = [
            (b"Host", target.host_header.encode()),
            (b"Accept", b"image/*"),
            (b"Accept-Encoding", b"identity"),
            (b"User-Agent", b"vllm-mlx"),
        ]
        extensions = {"timeout": {"connect": t, "read": t, "write": t, "pool": t}}
        try:
            async with pool.stream("GET", target.url, headers=headers, extensions=extensions) as r:
                if r.status in _REDIRECTS:
                    location = _header(r.headers, b"location")
                    if not location:
                        raise ImageError(f"image URL answered {r.status} without a Location")
                    return location
                if r.status != 200:
                    raise ImageError(f"image URL answered HTTP {r.status}")
                self._check_headers(r.headers)
                return await self._read(r)
        except httpcore.TimeoutException as exc:
            raise ImageError(f"image URL did not answer within {t:g} s") from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            raise ImageError("image URL could not be fetched (connection failed)") from exc

    def _check_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        kind = _header(headers, b"content-type").split(";")[0].strip().lower()
        if not kind.startswith("image/"):
            raise ImageError(f"image URL sent content type '{kind or 'none'}', not an image")
        length = _header(headers, b"content-length")
        if length.isdigit() and int(length) > self.policy.max_bytes:
            raise ImageError(self._too_large())

    async def _read(self, response: httpcore.Response) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_stream():
            body += chunk
            if len(body) > self.policy.max_bytes:  # stop reading: never buffer past the cap
                raise ImageError(self._too_large())
        return bytes(body)

    def _too_large(self) -> str:
        return f"image is larger than {self.policy.max_bytes / 2**20:g} MB"


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""
