"""Which URLs the workers are willing to POST to (SSRF policy), for Web Push endpoints and
webhook endpoints alike.

Both URLs come from outside — a push endpoint from a browser, a webhook URL from a producer —
so without a policy anyone could make a worker POST to ``http://169.254.169.254/`` or to a
service on our private network. The policy is enforced twice:

* ``check_endpoint_url`` when the URL is stored (and, for push, again right before each send),
* at connection time, inside the aiohttp session that sends (``guarded_connector``): a name can
  resolve to a public address when checked and to a private one a moment later (DNS
  rebinding), so the addresses actually connected to are checked too.

``allow_private`` (``NOTIFIER_PUSH_ALLOW_PRIVATE_ENDPOINTS``,
``NOTIFIER_WEBHOOK_ALLOW_PRIVATE_ENDPOINTS``) lifts the address rules, for local test peers.

A refusal by address says only that the endpoint is not allowed (``not_allowed``): never what
the host resolved to, nor whether it resolved at all, since the message reaches whoever
submitted the URL (the API's 422, a notification's ``last_error``, a webhook's deliveries log)
and would make the check a probe of our internal DNS. The address goes to the debug log only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger(__name__)

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# RFC 6052 well-known NAT64 prefix and RFC 8215 local-use NAT64 prefix: the IPv4 address is
# the last 32 bits.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class UnsafeEndpointError(ValueError):
    """The endpoint's URL or address is not allowed."""


def not_allowed(kind: str) -> str:
    """The one message for every refusal by address (see the module's docstring)."""
    return f"{kind} is not allowed: its host must resolve to public addresses only"


class UnsafeAddressError(OSError):
    """Raised inside aiohttp's connection path; an OSError so aiohttp wraps it like a DNS or
    connect failure (``ClientConnectorError.os_error``) instead of crashing the connector. Its
    message names no address: aiohttp's wrapper quotes it."""

    MARKER = "refused unsafe endpoint address"

    def __init__(self, address: str) -> None:
        super().__init__(self.MARKER)
        self.address = address
        log.debug("%s %s", self.MARKER, address)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in an IPv4-mapped, 6to4, NAT64 or Teredo IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_unsafe_address(address: str | IPAddress) -> bool:
    """True for anything but a plain public unicast address.

    ``is_global`` is the allow-list (it already excludes private, loopback, link-local, CGNAT,
    documentation and reserved ranges); the explicit tests say what we mean and guard against
    an ``ipaddress`` whose tables lag behind. IPv4-mapped addresses (``::ffff:0:0/96``) are not
    global, so they are refused even when the IPv4 address inside is public.
    """
    if isinstance(address, str):
        try:
            # Strip an IPv6 zone ("fe80::1%eth0"): the zone does not change the address class.
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return True
    else:
        ip = address
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and is_unsafe_address(inner):
            return True
    return (
        not ip.is_global
        or ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)
    )


def _split_endpoint(url: str, *, kind: str, schemes: tuple[str, ...]) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeEndpointError(f"malformed {kind}: {exc}") from None
    if parts.scheme not in schemes:
        raise UnsafeEndpointError(f"{kind} scheme must be {' or '.join(schemes)}")
    if not parts.hostname:
        raise UnsafeEndpointError(f"{kind} has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeEndpointError(f"{kind} must not carry credentials")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_endpoint_url(
    url: str, *, allow_private: bool, kind: str = "endpoint", require_https: bool = False
) -> None:
    """Raise ``UnsafeEndpointError`` (its message starting with ``kind``) unless ``url`` is
    one we may POST to. ``require_https`` refuses plain http unless ``allow_private``.

    Every address the host resolves to must be public: an attacker controlling DNS could
    otherwise return one public and one private address and hope the client picks the latter.
    """
    schemes = ("https",) if require_https and not allow_private else ("https", "http")
    host, port = _split_endpoint(url, kind=kind, schemes=schemes)
    if allow_private:
        return
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
            log.debug("%s host %s does not resolve: %s", kind, host, exc)
            raise UnsafeEndpointError(not_allowed(kind)) from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise UnsafeEndpointError(not_allowed(kind))
    for address in addresses:
        if is_unsafe_address(address):
            log.debug("%s host %s resolves to non-public %s", kind, host, address)
            raise UnsafeEndpointError(not_allowed(kind))


class GuardedResolver(AbstractResolver):
    """Wraps aiohttp's resolver and refuses names that resolve to a non-public address."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if is_unsafe_address(result["host"]):
                raise UnsafeAddressError(result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


def _guarded_socket_factory(addr_info: AddrInfoType) -> socket.socket:
    # aiohttp skips the resolver for IP-literal hosts; this runs for every socket it opens,
    # so no connection to a non-public address is possible whatever the URL looked like.
    family, type_, proto, _, sockaddr = addr_info
    if is_unsafe_address(str(sockaddr[0])):
        raise UnsafeAddressError(str(sockaddr[0]))
    return socket.socket(family=family, type=type_, proto=proto)


def guarded_connector(
    *, allow_private: bool, limit: int = 100, resolver: AbstractResolver | None = None
) -> aiohttp.TCPConnector:
    """A connector enforcing the address policy at connection time. Build it inside a loop.
    ``resolver`` is what resolves names before the policy sees the answers (aiohttp's own by
    default)."""
    if allow_private:
        return aiohttp.TCPConnector(limit=limit, resolver=resolver)
    return aiohttp.TCPConnector(
        limit=limit, resolver=GuardedResolver(resolver), socket_factory=_guarded_socket_factory
    )


def is_unsafe_address_error(exc: BaseException) -> bool:
    """Whether an aiohttp connection error came from the address policy.

    aiohappyeyeballs may fold several per-address errors into a plain OSError, so the marker in
    the message is checked as well as the type.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, UnsafeAddressError) or UnsafeAddressError.MARKER in str(seen):
            return True
        os_error = getattr(seen, "os_error", None)
        if (
            isinstance(os_error, BaseException)
            and os_error is not seen
            and is_unsafe_address_error(os_error)
        ):
            return True
        seen = seen.__cause__
    return False
