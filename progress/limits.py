"""What one client may cost a server process: frames per second, open sockets per address."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any

from .conf import get_settings

__all__ = ["FrameBucket", "OpenSockets", "client_address", "open_sockets"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def _trusted(raw: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(scope: Mapping[str, Any]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the nearest untrusted
    address in X-Forwarded-For (the entries a client writes itself come first, so they are never used)."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    trusted = _trusted(get_settings().TRUSTED_PROXIES)
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    forwarded: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            forwarded.extend(part.strip() for part in value.decode("latin-1").split(","))
    for address in reversed(forwarded):
        if not _is_trusted(address, trusted):
            return address if address else peer
    return forwarded[0] if forwarded and forwarded[0] else peer


class OpenSockets:
    """Open WebSockets per client address in this process, against MAX_CONNECTIONS_PER_CLIENT."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Count one more socket for ``address``; False (and nothing counted) when it holds its limit."""
        limit = get_settings().MAX_CONNECTIONS_PER_CLIENT
        held = self.counts.get(address, 0)
        if limit > 0 and held >= limit:
            return False
        self.counts[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """One socket of ``address`` closed."""
        held = self.counts.get(address, 0) - 1
        if held > 0:
            self.counts[address] = held
        else:
            self.counts.pop(address, None)


open_sockets = OpenSockets()
"""This process's count: consumers run on one event loop per process, so no lock is needed."""


class FrameBucket:
    """A token bucket of client frames: CLIENT_FRAME_BURST at once, then CLIENT_FRAMES_PER_SECOND."""

    __slots__ = ("at", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = float(get_settings().CLIENT_FRAME_BURST)
        self.at = now

    def take(self, now: float) -> bool:
        """Spend one frame's token; False when the client sends faster than it may."""
        settings = get_settings()
        refilled = self.tokens + (now - self.at) * settings.CLIENT_FRAMES_PER_SECOND
        self.tokens = min(float(settings.CLIENT_FRAME_BURST), refilled)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
