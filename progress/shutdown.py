"""Graceful restarts: on SIGTERM a server process closes its sockets with a restart code, then exits.

Browsers told "service restart" reconnect at once (with jitter) and resume by seq, to another process.
The server's own SIGTERM handling runs afterwards: it stops accepting and exits. The code is 1012
(service restart), or 4012 where the server refuses it (daphne, whose autobahn lets an application
send only 1000 and 3000-4999).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import weakref
from types import FrameType
from typing import Any, Protocol

from .conf import get_settings

__all__ = ["draining", "install", "restart_code", "track"]

log = logging.getLogger("progress")


class Closable(Protocol):
    async def restart(self) -> None:
        """Close the socket with the restart code."""


_open: weakref.WeakSet[Any] = weakref.WeakSet()
_installed_pid: int | None = None
_draining = False


RESTART = 1012
PRIVATE_RESTART = 4012
"""What a server that cannot send 1012 (daphne: autobahn sends only 1000 and 3000-4999) sends instead."""


def restart_code() -> int:
    """The code a socket is closed with when its process stops: 1012 (service restart)."""
    return RESTART


def draining() -> bool:
    """Whether this process is shutting down: new sockets are closed with the restart code at once."""
    return _draining


def track(consumer: Closable) -> None:
    """Close ``consumer`` with the restart code when the process is told to stop."""
    _open.add(consumer)


def install() -> None:
    """Take SIGTERM for this process, once, on its running loop (call from the server's loop)."""
    global _installed_pid
    if _installed_pid == os.getpid():
        return
    _installed_pid = os.getpid()
    if threading.current_thread() is not threading.main_thread():
        # Only the main thread may take a signal: runserver's autoreloader serves from another one
        # (and its main thread restarts the server itself). A socket then sees the server's own close.
        log.info("progress: serving off the main thread; SIGTERM is left to the server")
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if loop.is_closed():  # the loop that installed this is gone (a test's): nothing to close
            _hand_over(previous, signum, frame)
            return
        loop.call_soon_threadsafe(lambda: loop.create_task(_drain_then(previous, signum, frame)))

    signal.signal(signal.SIGTERM, on_sigterm)
    log.info("progress: SIGTERM handler installed over %r", previous)


async def _drain_then(previous: Any, signum: int, frame: FrameType | None) -> None:
    global _draining
    if _draining:
        return
    _draining = True
    sockets = list(_open)
    log.info("progress: SIGTERM: closing %d sockets with the restart code", len(sockets))
    started = asyncio.get_running_loop().time()
    closing = [asyncio.ensure_future(consumer.restart()) for consumer in sockets]
    late: set[asyncio.Future[None]] = set()
    if closing:
        _, late = await asyncio.wait(closing, timeout=get_settings().SHUTDOWN_TIMEOUT)
        for task in late:
            task.cancel()
    elapsed = asyncio.get_running_loop().time() - started
    log.info(
        "progress: SIGTERM: %d sockets closed in %.1f s, %d cut", len(sockets) - len(late), elapsed, len(late)
    )
    _hand_over(previous, signum, frame)


def _hand_over(previous: Any, signum: int, frame: FrameType | None) -> None:
    """The server's own SIGTERM handling: it stops accepting and exits."""
    from .metrics import process_exiting

    process_exiting()
    if callable(previous):
        previous(signum, frame)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
