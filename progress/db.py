"""Database work off the event loop, as Django expects of a thread that outlives a request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

T = TypeVar("T")


def db_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in a worker thread, closing connections Django considers stale first."""
    from django.db import close_old_connections

    close_old_connections()
    return fn(*args, **kwargs)


async def adb_call(fn: Callable[..., T], *args: Any, thread_sensitive: bool = False) -> T:
    """``db_call`` from async code, in a worker thread (Django's shared one if ``thread_sensitive``)."""
    result: T = await sync_to_async(db_call, thread_sensitive=thread_sensitive)(fn, *args)
    return result
