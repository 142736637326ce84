"""ASGI entry point: HTTP through Django, WebSockets through Channels with origin checks."""

from __future__ import annotations

import gc
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "transcribe_project.settings")
django_asgi_app = get_asgi_application()

# A server holding 1,000 sockets makes many long-lived objects, and CPython's default thresholds ran
# full collections over all of them mid-fan-out (bench A's tail). Freezing moves what start-up made
# out of every later collection; progress.collect runs the full ones after sockets close.
gc.freeze()
gc.set_threshold(100_000, 50, 1000)

# Imported after Django is set up: the routes import models.
from channels.routing import ProtocolTypeRouter  # noqa: E402

from progress.collect import ensure_started as collect_after_closes  # noqa: E402
from progress.reaper import ensure_started as ensure_reaper  # noqa: E402
from progress.routing import websocket_application  # noqa: E402
from progress.sender import bind_server_loop  # noqa: E402
from progress.shutdown import install as close_sockets_on_sigterm  # noqa: E402
from transcription.recovery import ensure_recovered  # noqa: E402
from transcription.upload import UploadGuard  # noqa: E402

router = ProtocolTypeRouter(
    {
        # Static files come through WhiteNoise's middleware (see settings), so a bare daphne or
        # uvicorn serves the pages' scripts too.
        "http": UploadGuard(django_asgi_app),
        "websocket": websocket_application(),
    }
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The router, plus lifespan support and binding the loop sync producers publish on."""
    bind_server_loop()
    ensure_reaper()  # every server process fails dead jobs; no scheduler process is needed
    collect_after_closes()  # the thresholds above leave closed sockets' cycles to this
    ensure_recovered()  # embedded default: re-queue what an earlier server process left queued
    close_sockets_on_sigterm()  # a restart tells watchers 1012 (4012 under daphne), not 1006
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await router(scope, receive, send)
