"""The seed design, as its users ran it: FastAPI, a dict of sockets, ``send_json`` in a loop.

One process holds every socket in a dict keyed by task id; an update is a pydantic model, dumped
once and sent to each of the task's sockets in turn with ``WebSocket.send_json``. Each socket has a
heartbeat coroutine and answers ``ping`` with ``pong``. Serve it as the seed did, under uvicorn with
uvloop and httptools: ``uvicorn bench.baselines.seed_server:app --loop uvloop --http httptools``.

The seed's producers called ``manager.broadcast`` in the same process; a bench producer is another
process, so it sends each update as a text frame to ``/pub/<task_id>/`` (as for the ``dict`` baseline).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime
from typing import Literal

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

HEARTBEAT_INTERVAL = float(os.environ.get("HEARTBEAT_INTERVAL", "30"))


class ProgressMessage(BaseModel):
    """One update of a task, as the seed sent it."""

    type: Literal["progress"] = "progress"
    task_id: str
    seq: int = 0
    attempt: int = 1
    stage: str
    percentage: int = Field(ge=0, le=100)
    message: str = ""
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))


class HeartbeatMessage(BaseModel):
    type: Literal["heartbeat"] = "heartbeat"
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ConnectionManager:
    """Task id -> its open sockets, in this process's memory."""

    def __init__(self) -> None:
        self.active: dict[str, list[WebSocket]] = {}

    async def connect(self, task_id: str, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active.setdefault(task_id, []).append(websocket)

    def disconnect(self, task_id: str, websocket: WebSocket) -> None:
        sockets = self.active.get(task_id, [])
        if websocket in sockets:
            sockets.remove(websocket)
        if not sockets:
            self.active.pop(task_id, None)

    async def broadcast(self, task_id: str, message: BaseModel) -> None:
        data = message.model_dump(mode="json")
        for websocket in list(self.active.get(task_id, [])):
            try:
                await websocket.send_json(data)
            except Exception:
                self.disconnect(task_id, websocket)


app = FastAPI()
manager = ConnectionManager()


async def heartbeat(websocket: WebSocket) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        await websocket.send_json(HeartbeatMessage().model_dump(mode="json"))


@app.websocket("/ws/tasks/{task_id}/")
async def watch(websocket: WebSocket, task_id: str) -> None:
    await manager.connect(task_id, websocket)
    beat = asyncio.create_task(heartbeat(websocket))
    try:
        while True:
            data = await websocket.receive_json()
            if data.get("type") == "ping":
                await websocket.send_json({"type": "pong"})
    except WebSocketDisconnect:
        pass
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        manager.disconnect(task_id, websocket)


@app.websocket("/pub/{task_id}/")
async def publish(websocket: WebSocket, task_id: str) -> None:
    """The bench producer's way in: each text frame is one ``broadcast`` of a ProgressMessage."""
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = ProgressMessage.model_validate_json(await websocket.receive_text())
            await manager.broadcast(task_id, message)
