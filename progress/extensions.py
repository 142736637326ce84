"""What a channel layer may offer beyond Channels' interface, found by name: ``progress.layers``
declares ``deliver_to``, ``discard_channel`` and ``group_send_many`` in its ``extensions``; any
other layer takes the plain path. Kept apart from ``layers`` so that a project without Redis
imports nothing of it."""

from __future__ import annotations

from typing import Any

__all__ = ["has_extension"]


def has_extension(layer: Any, name: str) -> bool:
    """Whether a channel layer declares ``name`` in its ``extensions``."""
    return name in getattr(layer, "extensions", ())
