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
from collections.abc import Sequence
from types import FrameType
from typing import Any, Protocol

from .conf import get_settings

__all__ = ["close_in_batches", "draining", "install", "restart_code", "track"]

log = logging.getLogger("progress")


class Closable(Protocol):
    loop_task: asyncio.Future[Any] | None
    """Ends once the socket is gone (None: it is)."""

    def restart(self) -> asyncio.Future[None] | None:
        """Close the socket with the restart code: done once the close is on its way (None: gone)."""


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
    loop = asyncio.get_running_loop()
    settings = get_settings()
    started = loop.time()
    cut = await close_in_batches(sockets, settings.SHUTDOWN_BATCH, started + settings.SHUTDOWN_TIMEOUT)
    log.info(
        "progress: SIGTERM: %d sockets closed in %.1f s, %d cut",
        len(sockets) - cut,
        loop.time() - started,
        cut,
    )
    _hand_over(previous, signum, frame)


async def close_in_batches(sockets: Sequence[Closable], size: int, deadline: float) -> int:
    """Close ``sockets`` with the restart code, ``size`` at a time, each batch once the last one's closes
    are on their way, then wait for them all to end, until ``deadline`` (loop time); how many were
    still open then (the server's own exit cuts them).

    Told all at once, every socket's task woke in the same moment and their closes, cleanups and the
    browsers' reconnects all piled into one storm; in batches the first browsers are back elsewhere
    while later batches close, and no batch waits on a browser's reply.
    """
    loop = asyncio.get_running_loop()
    for start in range(0, len(sockets), max(1, size)):
        sent = [f for f in (s.restart() for s in sockets[start : start + size]) if f is not None]
        left = deadline - loop.time()
        if sent and left > 0:
            await asyncio.wait(sent, timeout=left)
    ending = [s.loop_task for s in sockets if s.loop_task is not None and not s.loop_task.done()]
    left = deadline - loop.time()
    if ending and left > 0:
        _, late = await asyncio.wait(ending, timeout=left)
        return len(late)
    return len(ending)


def _hand_over(previous: Any, signum: int, frame: FrameType | None) -> None:
    """The server's own SIGTERM handling: it stops accepting and exits."""
    from .metrics import process_exiting

    process_exiting()
    if callable(previous):
        previous(signum, frame)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
