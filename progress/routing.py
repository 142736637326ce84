"""WebSocket URL routes: one per task, and a clean refusal for everything else."""

from __future__ import annotations

from django.urls import re_path

from .consumers import RefuseConsumer, TaskProgressConsumer

websocket_urlpatterns = [
    re_path(r"^ws/tasks/(?P<task_id>[A-Za-z0-9_-]{1,64})/?$", TaskProgressConsumer.as_asgi()),
    # Without a catch-all, URLRouter raises on an unknown path and the server answers 500.
    re_path(r"", RefuseConsumer.as_asgi()),
]
