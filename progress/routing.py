"""WebSocket URL routes: one per task, and a clean refusal for everything else."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
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


def websocket_application() -> Any:
    """The WebSocket side of a project's ``ProtocolTypeRouter``: Origin checked, then routed.

    Browsers send Origin; other clients must send one whose host is in ALLOWED_HOSTS.
    """
    return AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns))
