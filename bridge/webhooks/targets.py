"""Webhook target validation (SSRF guard).

A target URL must be ``http`` or ``https`` with a host, no credentials, and every address
its host resolves to must be a public one -- not loopback, private (RFC 1918, ULA, CGNAT),
link-local, multicast, reserved or unspecified -- unless the config allows loopback
(the devnet) or private targets. The check runs at registration *and* at every delivery,
inside the HTTP client's resolver (``GuardedResolver``), so a DNS answer that changes after
registration (rebinding) is refused too.

Some ranges are refused whatever the config says (``NEVER``): link-local (169.254.0.0/16,
fe80::/10: the cloud metadata services live there), "this network" 0.0.0.0/8 (connecting to
0.0.0.0 reaches the host itself), multicast, broadcast and the other reserved ranges, and
the known metadata addresses outside them (AWS's fd00:ec2::254, Alibaba's 100.100.100.200).
An IPv6 address that embeds an IPv4 one (IPv4-mapped, NAT64 64:ff9b::/96, 6to4, Teredo) is
judged as that IPv4 address too.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

from bridge.errors import InputError

MAX_URL = 2048


class TargetRefused(InputError):
    """The webhook target is not allowed."""

    code = "webhook-target-refused"


NEVER = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",           # "this network": 0.0.0.0 reaches the host itself
    "169.254.0.0/16",      # IPv4 link-local, cloud metadata (169.254.169.254)
    "100.100.100.200/32",  # Alibaba Cloud metadata (inside CGNAT space)
    "192.0.0.0/24",        # IETF protocol assignments (Oracle Cloud's legacy metadata 192.0.0.192)
    "224.0.0.0/4",         # multicast
    "240.0.0.0/4",         # reserved, and broadcast 255.255.255.255
    "fe80::/10",           # IPv6 link-local
    "fec0::/10",           # deprecated site-local
    "ff00::/8",            # IPv6 multicast
    "fd00:ec2::254/128",   # AWS metadata over IPv6 (inside ULA space)
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(a: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if a.ipv4_mapped is not None:
        return a.ipv4_mapped
    if a in NAT64:
        return ipaddress.IPv4Address(int(a) & 0xFFFFFFFF)
    if a.sixtofour is not None:
        return a.sixtofour
    if a.teredo is not None:
        return a.teredo[1]  # (server, client): the client is where packets go
    return None


def address_allowed(ip: str, *, allow_loopback: bool, allow_private: bool) -> bool:
    try:
        a = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(a, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(a)
        if embedded is not None:
            if a.ipv4_mapped is not None or a in NAT64:  # packets go to that IPv4 address
                return address_allowed(str(embedded), allow_loopback=allow_loopback, allow_private=allow_private)
            if not address_allowed(str(embedded), allow_loopback=False, allow_private=False):
                return False  # a 6to4 / Teredo wrapper around a non-public IPv4 address
    if any(a in n for n in NEVER if n.version == a.version):
        return False
    if a.is_loopback:
        return allow_loopback
    if a.is_unspecified or a.is_multicast or a.is_reserved or a.is_link_local:
        return False
    if a.is_private or (isinstance(a, ipaddress.IPv4Address) and a in ipaddress.ip_network("100.64.0.0/10")):
        return allow_private
    return a.is_global


def parse_target(url: object) -> tuple[str, str, int]:
    """(scheme, host, port) of a syntactically acceptable target URL, else TargetRefused."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise TargetRefused(f"url must be a string of at most {MAX_URL} characters")
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        raise TargetRefused("url is malformed") from None
    if u.scheme not in ("http", "https"):
        raise TargetRefused("url must be http:// or https://")
    if not u.hostname:
        raise TargetRefused("url has no host")
    if u.username or u.password:
        raise TargetRefused("url must not carry credentials")
    if u.fragment:
        raise TargetRefused("url must not have a fragment")
    return u.scheme, u.hostname, port or (443 if u.scheme == "https" else 80)


async def check_target(url: str, *, allow_loopback: bool, allow_private: bool, resolver=None) -> None:
    """Refuse ``url`` unless every address of its host is allowed (TargetRefused)."""
    _, host, port = parse_target(url)
    resolver = resolver or ThreadedResolver()
    try:
        infos = await resolver.resolve(host, port, socket.AF_UNSPEC)
    except OSError:
        raise TargetRefused("url host does not resolve") from None
    if not infos:
        raise TargetRefused("url host does not resolve")
    for info in infos:
        if not address_allowed(info["host"], allow_loopback=allow_loopback, allow_private=allow_private):
            raise TargetRefused("url resolves to an address that is not allowed (loopback, private, "
                                "link-local or reserved)")


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops addresses webhook targets may not use."""

    def __init__(self, *, allow_loopback: bool, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self.allow_loopback = allow_loopback
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        ok = [i for i in infos if address_allowed(i["host"], allow_loopback=self.allow_loopback,
                                                    allow_private=self.allow_private)]
        if not ok:
            raise OSError(f"webhook target {host} resolves to no allowed address")
        return ok

    async def close(self) -> None:
        await self._inner.close()
