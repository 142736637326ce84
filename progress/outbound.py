"""POSTs to addresses a user gave us (webhooks), refusing our own network: the address is checked
after resolving, and the connection goes to the very address checked (no second lookup to rebind)."""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Refused", "Sent", "allowed_address", "post", "resolve"]

TIMEOUT = 5.0


class Refused(Exception):
    """The URL is not one we send to: a bad scheme, or an address inside our own network."""


@dataclass(frozen=True)
class Sent:
    status: int


def private_allowed() -> bool:
    """``WEBHOOK_ALLOW_PRIVATE=1`` in the environment: loopback and private addresses are allowed."""
    return os.environ.get("WEBHOOK_ALLOW_PRIVATE", "") == "1"


def allowed_address(address: str, allow_private: bool) -> bool:
    """Whether an IP address may be sent to: a public one (or any, when private ones are allowed).

    Not global covers loopback, private, link-local (the cloud metadata address among them),
    shared, reserved and unspecified addresses."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return allow_private or (ip.is_global and not ip.is_multicast)


def resolve(url: str, allow_private: bool | None = None) -> tuple[str, str, int, str]:
    """The URL's scheme, host, port and the first address it resolves to that may be sent to.

    Raises Refused when the URL is not http(s), or when any address it resolves to may not be sent to
    (a name that answers with one public and one private address is refused)."""
    allow = private_allowed() if allow_private is None else allow_private
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("only http and https URLs")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Refused(f"cannot resolve {parts.hostname}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(allowed_address(a, allow) for a in addresses):
        raise Refused("the address is inside a private network")
    return parts.scheme, parts.hostname, port, addresses[0]


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address already checked, with the certificate checked for the URL's host."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        """Connect to the checked address, not to whatever the host name resolves to now."""
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float = TIMEOUT) -> Sent:
    """POST ``body`` to ``url``; its status (redirects are not followed). Raises Refused or OSError."""
    scheme, host, port, address = resolve(url)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = _PinnedHTTPS(host, address, port, timeout)
    else:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        host_header = host if parts.port is None else f"{host}:{port}"
        connection.request("POST", path, body, {**headers, "Host": host_header})
        response = connection.getresponse()
        response.read(64 * 1024)  # a little of the answer, so the connection closes cleanly
        return Sent(response.status)
    finally:
        connection.close()
