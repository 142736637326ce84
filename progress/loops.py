"""Which event loop fans out for this process: the server's, or one of our own on a daemon thread.

In a server process the loop is the server's; elsewhere (a Celery worker, a script) it is a loop on
a daemon thread, so sync producers never need ``async_to_sync`` per call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger("progress")

T = TypeVar("T")

_server_loop: asyncio.AbstractEventLoop | None = None
_own_loop: asyncio.AbstractEventLoop | None = None
_own_loop_lock = threading.Lock()
_warned_in_memory = False


def bind_server_loop() -> None:
    """Remember the server's event loop, so sync producers in this process fan out on it."""
    global _server_loop
    _server_loop = asyncio.get_running_loop()


def unbind_server_loop() -> None:
    """Forget the server's loop: sync producers then fan out as a worker's would (tests)."""
    global _server_loop, _warned_in_memory
    _server_loop = None
    _warned_in_memory = False


def alive(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether ``loop`` is running (not closed, not gone with a fork)."""
    return loop is not None and not loop.is_closed() and loop.is_running()


def own_loop() -> asyncio.AbstractEventLoop | None:
    """This process's own publishing loop, if it started one."""
    return _own_loop


def _start_own_loop() -> asyncio.AbstractEventLoop:
    """A loop on a daemon thread for processes without a server (Celery workers, scripts)."""
    global _own_loop
    with _own_loop_lock:
        if _own_loop is None or _own_loop.is_closed():
            loop = asyncio.new_event_loop()
            started = threading.Event()
            loop.call_soon(started.set)
            threading.Thread(target=loop.run_forever, name="progress-publisher", daemon=True).start()
            started.wait()
            _own_loop = loop
        return _own_loop


def _forget_loops_after_fork() -> None:
    # A forked child (a Celery prefork worker) inherits the loop objects but not their threads.
    global _own_loop, _server_loop, _own_loop_lock
    _own_loop = _server_loop = None
    _own_loop_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_loops_after_fork)


def loop_for_sync_caller() -> asyncio.AbstractEventLoop | None:
    """The loop that fans out for a sync caller, or None when nobody could receive."""
    global _warned_in_memory
    if alive(_server_loop):
        return _server_loop
    if isinstance(get_channel_layer(), InMemoryChannelLayer):
        if not _warned_in_memory:
            _warned_in_memory = True
            log.warning(
                "progress: publishing from a process that is not the server with the in-memory "
                "channel layer; state is stored but no watcher receives it live "
                "(set REDIS_URL or REDIS_SENTINELS)"
            )
        return None
    return _start_own_loop()


class PerLoop(Generic[T]):
    """One ``T`` per event loop, made at first use from any thread (a loop's sender, its flushes)."""

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self.make = make
        self.made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()
        self.lock = threading.Lock()

    def __call__(self, loop: asyncio.AbstractEventLoop) -> T:
        found = self.made.get(loop)
        if found is None:
            with self.lock:
                found = self.made.get(loop)
                if found is None:
                    found = self.made[loop] = self.make(loop)
        return found

    def get(self, loop: asyncio.AbstractEventLoop) -> T | None:
        """The loop's ``T`` if it has one already."""
        return self.made.get(loop)
