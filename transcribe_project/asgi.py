"""ASGI entry point: HTTP through Django, WebSockets through Channels with origin checks."""

from __future__ import annotations

import gc
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "transcribe_project.settings")
django_asgi_app = get_asgi_application()

# A server holding many sockets makes many long-lived objects, and CPython's default thresholds ran
# full collections over all of them mid-fan-out (bench A's tail). Freezing moves what start-up made
# out of every later collection; progress.collect runs the full ones after sockets close.
gc.freeze()
gc.set_threshold(100_000, 50, 1000)

# Imported after Django is set up: the routes import models.
from channels.routing import ProtocolTypeRouter  # noqa: E402

from progress.asgi import lifespan, server_started  # noqa: E402
from progress.routing import websocket_application  # noqa: E402
from transcription.recovery import ensure_recovered  # noqa: E402
from transcription.tus import TusApp  # noqa: E402
from transcription.upload import UploadGuard  # noqa: E402

router = ProtocolTypeRouter(
    {
        # Static files come through WhiteNoise's middleware (see settings), so a bare daphne or
        # uvicorn serves the pages' scripts too.
        "http": TusApp(UploadGuard(django_asgi_app)),  # resumable uploads, then the rest
        "websocket": websocket_application(),
    }
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The router, with progress' per-process start (progress.asgi) and the audio app's recovery."""
    server_started()  # the publishing loop, the reaper, the collector, 1012 on SIGTERM
    ensure_recovered()  # embedded default: re-queue what an earlier server process left queued
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await router(scope, receive, send)
