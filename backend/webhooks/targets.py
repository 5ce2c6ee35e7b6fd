"""Where a webhook may go (SSRF): checked when the client names a callback_url, and again, on
the addresses the name resolves to, right before each attempt.

At upload (`check_callback_url`): an absolute http(s) URL, no user name or password, https
where WEBHOOK_REQUIRE_HTTPS (production), and a host on the client's allow-list
(Client.webhook_allowed_hosts), or a loopback host where WEBHOOK_ALLOW_LOOPBACK (development).

At delivery (`resolve`): the host is resolved once and the attempt connects to the address
checked here, not to a second lookup (no DNS rebinding between the check and the connect).
A public address is fine for an allowed name; a private, loopback, link-local, multicast or
reserved one only where an address or network entry of the allow-list covers it (or loopback
where WEBHOOK_ALLOW_LOOPBACK). Redirects are never followed (services.py).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from backend.jobs import errors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


@dataclass(frozen=True)
class AllowList:
    names: frozenset[str]  # exact host names
    suffixes: tuple[str, ...]  # ".hospital.example" from "*.hospital.example"
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]  # addresses are /32 or /128

    @classmethod
    def parse(cls, text: str) -> AllowList:
        names, suffixes, networks = set(), [], []
        for raw in text.replace(",", "\n").splitlines():
            entry = raw.strip().lower().rstrip(".")
            if not entry or entry.startswith("#"):
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                suffixes.append(entry[1:])
            else:
                names.add(entry)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def names_host(self, host: str) -> bool:
        if host in self.names or any(host.endswith(s) for s in self.suffixes):
            return True
        address = _address(host)
        return address is not None and self.covers(address)

    def covers(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_loopback_host(host: str) -> bool:
    address = _address(host)
    return host in _LOOPBACK_NAMES or (address is not None and address.is_loopback)


def check_callback_url(url: str, *, allowed_hosts: str) -> str:
    """The callback_url as stored, or a 400 saying what is wrong with it."""
    url = (url or "").strip()
    if len(url) > MAX_URL_LENGTH or not url.isascii() or not url.isprintable():
        raise errors.InvalidCallbackUrl(details={"max_length": MAX_URL_LENGTH})
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a port out of range
    except ValueError:
        raise errors.InvalidCallbackUrl() from None
    host = (parts.hostname or "").rstrip(".")
    if (
        parts.scheme not in ("http", "https")
        or not host
        or parts.username
        or parts.password
        or parts.fragment
    ):
        raise errors.InvalidCallbackUrl()
    if port == 0:
        raise errors.InvalidCallbackUrl()
    if settings.WEBHOOK_REQUIRE_HTTPS and parts.scheme != "https":
        raise errors.CallbackUrlHttpsRequired()
    loopback_ok = settings.WEBHOOK_ALLOW_LOOPBACK and _is_loopback_host(host)
    if not (loopback_ok or AllowList.parse(allowed_hosts).names_host(host)):
        raise errors.CallbackUrlNotAllowed(details={"host": host[:255]})
    return url


class TargetRefused(Exception):
    """The callback's address is not one cxrq may call: the delivery ends, never attempted."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as named in the URL: the Host header and the TLS server name
    address: str  # what the attempt connects to
    port: int
    path: str  # path and query

    @property
    def connect_url(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{address}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def resolve(url: str, *, allowed_hosts: str) -> Target:
    """The address to connect to for this callback; TargetRefused when none may be called.
    socket.gaierror (a name that does not resolve, for now) is the caller's to retry."""
    check_callback_url(url, allowed_hosts=allowed_hosts)  # the allow-list may have changed since
    parts = urlsplit(url)
    host = parts.hostname.rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allow = AllowList.parse(allowed_hosts)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    candidates = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in candidates:
        if _may_call(address, allow):
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            return Target(parts.scheme, host, str(address), port, path)
    raise TargetRefused(f"{host} resolves to {', '.join(sorted({str(a) for a in candidates}))[:200]}")


def _may_call(address: IPAddress, allow: AllowList) -> bool:
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    if allow.covers(address):
        return True
    if address.is_loopback:
        return settings.WEBHOOK_ALLOW_LOOPBACK
    return address.is_global and not address.is_multicast
