"""WebSocket URL routes: one per task, and a clean refusal for everything else."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from .consumers import TaskProgressConsumer
from .keys import bearer_of_headers


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


def websocket_application() -> Any:
    """The WebSocket side of a project's ``ProtocolTypeRouter``: Origin checked, then routed.

    Browsers send Origin, whose host must be in ALLOWED_HOSTS. A client with an API key
    (``Authorization: Bearer``, which no browser's WebSocket can send) may send none.
    """
    router = URLRouter(websocket_urlpatterns)
    checked = AllowedHostsOriginValidator(router)

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = scope.get("headers", ())
        keyed = bearer_of_headers(headers) is not None
        if keyed and not any(name == b"origin" for name, _ in headers):
            await router(scope, receive, send)
        else:
            await checked(scope, receive, send)

    return application
