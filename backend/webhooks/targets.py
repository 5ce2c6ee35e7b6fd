"""Where a webhook may go (SSRF): checked when the client names a callback_url, and again, on
the addresses the name resolves to, right before each attempt.

At upload (`check_callback_url`): an absolute http(s) URL, no user name or password, https
where WEBHOOK_REQUIRE_HTTPS (production), and a host on the client's allow-list
(Client.webhook_allowed_hosts) with the URL's port (an entry without a port: the scheme's
default port only), or a loopback host where WEBHOOK_ALLOW_LOOPBACK (development).

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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ANY_PORT = -1
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class Entry:
    """One line of an allow-list: a host name, `*.domain`, an address or a network, and a port.

    `hooks.example` and `*.hospital.example` and `10.20.0.0/16` and `[fd00::/8]` name hosts;
    `:8443` after one names the port a URL must use; without a port only the scheme's default
    port (443 for https, 80 for http) is allowed, so an entry for a web server does not open
    every other service on that host (Redis on :6379); `:*` allows any port, on purpose.
    """

    name: str = ""
    suffix: str = ""  # ".hospital.example" from "*.hospital.example"
    network: Network | None = None  # an address is a /32 or /128
    port: int | None = None  # None: the scheme's default; ANY_PORT: any

    @classmethod
    def parse(cls, raw: str) -> Entry | None:
        """The entry, or None for a line that is not one (it then allows nothing)."""
        host, port = _split_port(raw.strip().lower())
        host = host.rstrip(".")
        if not host or port == 0:
            return None
        try:
            return cls(network=ipaddress.ip_network(host, strict=False), port=port)
        except ValueError:
            pass
        if ":" in host or "/" in host or "[" in host or "]" in host:
            return None
        if host.startswith("*."):
            return cls(suffix=host[1:], port=port)
        return cls(name=host, port=port)

    def names_host(self, host: str) -> bool:
        if self.network is not None:
            address = _address(host)
            return address is not None and address in self.network
        return host == self.name if self.name else host.endswith(self.suffix)

    def allows_port(self, scheme: str, port: int) -> bool:
        if self.port == ANY_PORT:
            return True
        return port == (_DEFAULT_PORTS[scheme] if self.port is None else self.port)


def _split_port(entry: str) -> tuple[str, int | None]:
    """("host", port) from "host", "host:8443", "host:*", "[v6]", "[v6]:8443" or a bare IPv6
    address or network (no port: its colons are the address's). A port that is not one: 0."""
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket:
            return "", None
        if not rest:
            return host, None
        if not rest.startswith(":"):
            return "", None
        return host, _port(rest[1:])
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, _port(port)
    return entry, None


def _port(text: str) -> int:
    if text == "*":
        return ANY_PORT
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        return 0
    return int(text)


@dataclass(frozen=True)
class AllowList:
    entries: tuple[Entry, ...]

    @classmethod
    def parse(cls, text: str) -> AllowList:
        entries = []
        for raw in text.replace(",", "\n").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            entry = Entry.parse(line)
            if entry is not None:
                entries.append(entry)
        return cls(tuple(entries))

    def allows(self, host: str, *, scheme: str, port: int | None) -> bool:
        """Whether a URL naming this host (and port; None: the scheme's default) may be called."""
        port = _DEFAULT_PORTS[scheme] if port is None else port
        return any(e.names_host(host) and e.allows_port(scheme, port) for e in self.entries)

    def covers(self, address: IPAddress) -> bool:
        """Whether an address entry covers this address: the URL's host and port were allowed
        already (check_callback_url); this is whether the name may resolve to a private one."""
        return any(e.network is not None and address in e.network for e in self.entries)


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
    if not (loopback_ok or AllowList.parse(allowed_hosts).allows(host, scheme=parts.scheme, port=port)):
        raise errors.CallbackUrlNotAllowed(details={"host": host[:255], "port": port})
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
