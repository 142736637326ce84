"""The ASGI side of a project: Django's HTTP and the task sockets in one application, with what every
server process runs for progress started on its first event.

    application = progress.asgi.application(get_asgi_application())
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from channels.routing import ProtocolTypeRouter

from . import webhooks
from .collect import ensure_started as collect_after_closes
from .loops import bind_server_loop
from .reaper import ensure_started as ensure_reaper
from .routing import websocket_application
from .shutdown import install as close_sockets_on_sigterm

__all__ = ["application", "server_started"]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def server_started() -> None:
    """Once per server process (idempotent): bind the loop sync producers publish on, fail dead jobs
    (the reaper), deliver webhooks, collect closed sockets' cycles, and close sockets with 1012 on SIGTERM."""
    bind_server_loop()
    ensure_reaper()
    webhooks.ensure_started()
    collect_after_closes()
    close_sockets_on_sigterm()


def application(http: ASGIApp) -> ASGIApp:
    """``http`` (Django's ASGI application) plus ``/ws/tasks/<id>/``, with lifespan events answered."""
    router = ProtocolTypeRouter({"http": http, "websocket": websocket_application()})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        server_started()
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        await router(scope, receive, send)

    return app


async def lifespan(receive: Any, send: Any) -> None:
    """Answer a server's lifespan events (startup and shutdown need no work here)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
