"""Upload limits and progress at the ASGI edge, before Django reads a request body at all.

Django's ASGI handler receives the whole body before a view runs, so an upload's size is refused
here from its Content-Length (nothing is read), and ``uploading`` progress is reported here as
the body arrives, for clients that chose their task id (``POST /api/tasks/?task_id=<id>``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async

from progress import areport_error, areport_progress
from progress.conf import get_settings
from progress.schemas import TASK_ID_PATTERN

log = logging.getLogger("transcription")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

UPLOAD_PATH = re.compile(r"^/api/tasks/?$")
MULTIPART_SLACK = 64 * 1024
"""Bytes of multipart framing allowed on top of MAX_UPLOAD_BYTES in a Content-Length."""
_TASK_ID = re.compile(TASK_ID_PATTERN)


def body_limit() -> int:
    """The largest Content-Length an upload may announce."""
    return get_settings().MAX_UPLOAD_BYTES + MULTIPART_SLACK


def chosen_task_id(query_string: bytes) -> str | None:
    """The ``task_id`` query parameter, if the client chose one (not validated)."""
    values = parse_qs(query_string.decode("latin-1")).get("task_id")
    return values[-1] if values else None


def _task_exists(task_id: str) -> bool:
    from django.db import close_old_connections

    from progress.models import Task

    close_old_connections()
    return Task.objects.filter(pk=task_id).exists()


async def _refuse(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UploadGuard:
    """ASGI middleware for ``POST /api/tasks/``: refuses oversize bodies and reports upload progress."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not UPLOAD_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_length = headers.get(b"content-length", b"").decode("latin-1")
        if not raw_length.isdigit():
            await _refuse(send, 411, "length_required", "uploads must send a Content-Length header")
            return
        length, limit = int(raw_length), get_settings().MAX_UPLOAD_BYTES
        if length > body_limit():
            detail = f"the upload is {length} bytes; files may be at most {limit} bytes"
            await _refuse(send, 413, "file_too_large", detail)
            return
        task_id = chosen_task_id(scope.get("query_string", b""))
        if task_id is None or not _TASK_ID.match(task_id):
            await self.app(scope, receive, send)  # the view reports a bad id, or picks one
            return
        if await sync_to_async(_task_exists, thread_sensitive=False)(task_id):
            await _refuse(send, 409, "task_exists", f"a task {task_id!r} exists already; choose another id")
            return
        await areport_progress(task_id, "uploading", 0)
        await self.app(scope, _counting(receive, task_id, length), send)


def _counting(receive: Receive, task_id: str, length: int) -> Receive:
    """Wrap ``receive`` to report the share of the body received, once per percent."""
    received = 0
    reported = 0
    complete = False

    async def counted() -> Message:
        nonlocal received, reported, complete
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            percentage = min(99, received * 100 // length) if length else 99
            if percentage > reported:
                reported = percentage
                await areport_progress(task_id, "uploading", percentage)
            complete = complete or not message.get("more_body", False)
        elif message["type"] == "http.disconnect" and not complete:
            complete = True
            log.info("transcription: upload of task %s interrupted at %s bytes", task_id, received)
            await areport_error(
                task_id,
                "upload_interrupted",
                "The upload was interrupted before the whole file arrived; please upload it again.",
                f"received {received} of {length} bytes",
            )
        return message

    return counted
