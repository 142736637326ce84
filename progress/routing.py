"""WebSocket URL routes: one per task, and a clean refusal for everything else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.urls import re_path

from .consumers import TaskProgressConsumer


class RefuseConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Refuses WebSocket paths that name no task, at the handshake (HTTP 403), without a traceback."""

    async def connect(self) -> None:
        """Close before accepting, which the server answers with 403."""
        await self.close()


websocket_urlpatterns = [
    re_path(r"^ws/tasks/(?P<task_id>[A-Za-z0-9_-]{1,64})/?$", TaskProgressConsumer.as_asgi()),
    # Without a catch-all, URLRouter raises on an unknown path and the server answers 500.
    re_path(r"", RefuseConsumer.as_asgi()),
]


def websocket_application() -> Callable[[dict[str, Any], Any, Any], Awaitable[None]]:
    """``AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns))``, holding less per socket.

    Each of those layers awaits the next for the socket's whole life: four coroutine frames per
    watcher (~1.2 KB of 30). This checks the Origin and picks the route with the same rules, then
    hands back the consumer's own coroutine for the caller to await.
    """
    validator = AllowedHostsOriginValidator(None)

    def route(scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        origin = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                try:
                    origin = urlparse(value.decode("latin1"))
                except UnicodeDecodeError:
                    origin = None
        if not validator.valid_origin(origin):
            return WebsocketDenier()(scope, receive, send)  # type: ignore[no-any-return]
        path = scope["path"][len(scope.get("root_path", "")) :].lstrip("/")
        for pattern in websocket_urlpatterns:
            match = pattern.pattern.match(path)
            if match:
                remaining, args, kwargs = match
                app: Any = pattern.callback
                consumer = app.consumer_class(**app.consumer_initkwargs)
                routed = dict(scope, path_remaining=remaining, url_route={"args": args, "kwargs": kwargs})
                return consumer(routed, receive, send)  # type: ignore[no-any-return]
        raise ValueError(f"no WebSocket route for {path!r}")  # the catch-all above matches everything

    # A plain function returning a coroutine is an ASGI 3 app too; asgiref must not take it for ASGI 2.
    route._asgi_single_callable = True  # type: ignore[attr-defined]
    return route
