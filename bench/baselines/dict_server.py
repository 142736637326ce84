"""The design we replace: one process, a dict of sockets, send in a loop (a bare ASGI app for uvicorn).

Watchers connect to /ws/tasks/<id>/; a producer connects to /pub/<id>/ and every text frame it sends
goes to every watcher of that task. With HEARTBEAT_INTERVAL set, each socket gets heartbeats too.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]
watchers: dict[str, set[Send]] = {}
HEARTBEAT = float(os.environ.get("HEARTBEAT_INTERVAL", "0"))


async def _beat(send: Send) -> None:
    """Send a heartbeat frame every HEARTBEAT seconds, as the product's consumer does."""
    while True:
        await asyncio.sleep(HEARTBEAT)
        await send(
            {
                "type": "websocket.send",
                "text": json.dumps({"type": "heartbeat", "ts": time.time()}, separators=(",", ":")),
            }
        )


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Send) -> None:
    """Route watchers into the dict and forward each producer frame to them in a loop."""
    if scope["type"] != "websocket":
        return
    parts = scope["path"].strip("/").split("/")
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    if parts[0] == "pub":
        while (message := await receive())["type"] == "websocket.receive":
            for watcher in list(watchers.get(parts[1], ())):
                await watcher({"type": "websocket.send", "text": message["text"]})
        return
    group = watchers.setdefault(parts[-1], set())
    group.add(send)
    beat = asyncio.create_task(_beat(send)) if HEARTBEAT > 0 else None
    try:
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        group.discard(send)
        if beat is not None:
            beat.cancel()
