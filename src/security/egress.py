"""Where the platform may send a request it was told to send (webhook endpoints): the SSRF guard.

A URL passes when its scheme is https (http only where allowed: development), it carries no
user info, its port is allowed, and **every** address its host resolves to is globally
routable — after unwrapping the forms that smuggle an internal IPv4 address inside an IPv6
one: IPv4-mapped (`::ffff:127.0.0.1`), NAT64 (`64:ff9b::7f00:1`, which Python calls global),
6to4 (`2002:7f00:1::`) and Teredo. Numeric hosts are read as the C resolver reads them
(`2130706433`, `0x7f.1`, `127.1` are all 127.0.0.1). The check runs at registration and
again before each delivery, and the caller connects to the address it checked (pinned), so a
name that changes its answer in between (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_PORTS = frozenset({443, 80, 8443})
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


class EgressRefused(Exception):
    """The destination is not one the platform may call; `reason` says why (no address)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked URL and the addresses it may be reached at (connect to one of these)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[Address, ...]


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: Address) -> bool:
    """Globally routable, and so is any IPv4 address it carries."""
    inner = embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    return bool(address.is_global) and not address.is_multicast


def literal_address(host: str) -> Address | None:
    """The host as an address when it is one, read as inet_aton reads IPv4 (`0x7f.1`)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every A and AAAA answer for `host`, as the operating system's resolver gives them."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found]


async def check_destination(
    url: str,
    *,
    resolver: Resolver = system_resolver,
    allow_http: bool = False,
    ports: Iterable[int] = DEFAULT_PORTS,
    trusted_hosts: Iterable[str] = (),
) -> Destination:
    """The destination `url` names, once every check passed; `EgressRefused` otherwise.

    A host in `trusted_hosts` (the operator's own receivers) may use any port and resolve to
    non-public addresses; scheme and user info are checked all the same."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EgressRefused("The URL cannot be read.") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise EgressRefused("Use an https URL." if not allow_http else "Use an http(s) URL.")
    if parts.username is not None or parts.password is not None:
        raise EgressRefused("A URL with user info is not accepted.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EgressRefused("The URL has no host.")
    port = port if port is not None else (443 if scheme == "https" else 80)
    trusted = host.lower() in frozenset(trusted_hosts)
    if not trusted and port not in frozenset(ports):
        raise EgressRefused(f"Port {port} is not allowed.")
    literal = literal_address(host)
    if literal is not None:
        answers: list[Address] = [literal]
    else:
        try:
            resolved = await resolver(host, port)
        except (OSError, ValueError):  # ValueError: IDNA refuses the name (`a..b`, long labels)
            raise EgressRefused("The host does not resolve.") from None
        answers = []
        for text in resolved:
            try:
                answers.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                raise EgressRefused("The host resolves to something that is no address.") from None
        if not answers:
            raise EgressRefused("The host does not resolve.")
    if not trusted and not all(is_public(address) for address in answers):
        raise EgressRefused("The host is not a public internet address.")
    return Destination(url, scheme, host, port, tuple(dict.fromkeys(answers)))


@dataclass(frozen=True)
class EgressPolicy:
    """One deployment's rules for outgoing calls, checked by `check` (see `check_destination`)."""

    allow_http: bool = False
    ports: frozenset[int] = DEFAULT_PORTS
    trusted_hosts: frozenset[str] = frozenset()
    resolver: Resolver = system_resolver

    async def check(self, url: str) -> Destination:
        return await check_destination(
            url,
            resolver=self.resolver,
            allow_http=self.allow_http,
            ports=self.ports,
            trusted_hosts=self.trusted_hosts,
        )
