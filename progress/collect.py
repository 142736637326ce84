"""Full garbage collections when many sockets have closed, never on a clock.

A server process raises the collector's thresholds so a fan-out to thousands of sockets is not paused
by collections over all of them (``transcribe_project/asgi.py``). What a closed socket leaves in
reference cycles (the handshake's objects in the ASGI server's WebSocket code) then waited for a
full collection that rarely came, and RSS climbed with every round of connects and closes. This
runs one full collection once enough sockets have closed since the last: a pause when sockets churn,
none while they stay.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("progress")

CHECK_EVERY = 5.0
"""Seconds between two looks at how many sockets closed."""
AFTER_CLOSES = 1000
"""Sockets closed since the last full collection that make the next one worth its pause."""

_closed = 0
_started: asyncio.AbstractEventLoop | None = None


def socket_closed() -> None:
    """Count a closed socket (called by the consumer's cleanup)."""
    global _closed
    _closed += 1


def ensure_started() -> None:
    """Look every CHECK_EVERY seconds on the running loop (once per loop)."""
    global _started
    loop = asyncio.get_running_loop()
    if _started is loop:
        return
    _started = loop
    loop.call_later(CHECK_EVERY, _check, loop)


def _check(loop: asyncio.AbstractEventLoop) -> None:
    global _closed
    from .shutdown import draining

    if _closed >= AFTER_CLOSES and not draining():  # a stopping process frees everything by exiting
        closed, _closed = _closed, 0
        started = time.perf_counter()
        found = gc.collect()
        pause = (time.perf_counter() - started) * 1000
        log.info(
            "progress: full collection after %d closes: %d objects freed in %.0f ms", closed, found, pause
        )
    if not loop.is_closed():
        loop.call_later(CHECK_EVERY, _check, loop)
