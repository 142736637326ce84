"""Upload limits and progress at the ASGI edge, before Django reads a request body at all.

Django's ASGI handler receives the whole body before a view runs, so here, before it: an upload's
size is refused from its Content-Length (nothing is read), so are uploads past the owner's or the
address's quotas (``quotas``, 429 with Retry-After), a body that stalls is dropped after
UPLOAD_IDLE_TIMEOUT, and a reserved task's ``uploading`` progress follows the bytes as they arrive
(``POST /api/tasks/<id>/upload``, only from the session that reserved it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async

from progress import areport_error, areport_progress
from progress.access import may_read, owners_of_scope
from progress.views import NOT_FOUND_BODY

from .conf import limits
from .quotas import upload_refusal
from .stages import UPLOADING

log = logging.getLogger("transcription")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

UPLOAD_PATH = re.compile(r"^/api/tasks/(?:(?P<task_id>[A-Za-z0-9_-]{1,64})/upload)?/?$")
RESERVE_PATH = re.compile(r"^/api/tasks/reserve/?$")
MULTIPART_SLACK = 64 * 1024
"""Bytes of multipart framing allowed on top of MAX_UPLOAD_BYTES in a Content-Length."""


def body_limit() -> int:
    """The largest Content-Length an upload may announce."""
    return limits().max_upload_bytes + MULTIPART_SLACK


def _waiting_for_upload(task_id: str, scope: Scope) -> bool | None:
    """True: the requester's task waits for its upload; False: theirs, but not waiting; None: not theirs."""
    from django.db import close_old_connections

    from progress import tasks

    close_old_connections()
    task = tasks.get(task_id)
    if task is None or not may_read(task.owner, owners_of_scope(scope)):
        return None
    return task.running and task.stage == UPLOADING


async def _respond(send: Send, status: int, body: bytes, retry_after: int | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
    log.info("transcription: refused with %s %s: %s", status, code, detail)
    await _respond(send, status, json.dumps({"error": code, "detail": detail}).encode(), retry_after)


async def _over_quota(scope: Scope, send: Send, length: int, *, new_task: bool) -> bool:
    """Answer 429 if the upload is past a quota (True); counts it otherwise."""
    refusal = await sync_to_async(upload_refusal, thread_sensitive=False)(scope, length, new_task=new_task)
    if refusal is None:
        return False
    await _refuse(send, 429, refusal.code, refusal.detail, refusal.retry_after)
    return True


class UploadGuard:
    """ASGI middleware for uploads: refuses oversize bodies, drops stalled ones, reports upload progress."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        posted = scope["type"] == "http" and scope["method"] == "POST"
        match = UPLOAD_PATH.match(scope["path"]) if posted else None
        if match is None:
            if (
                posted
                and RESERVE_PATH.match(scope["path"])
                and await _over_quota(scope, send, 0, new_task=True)
            ):
                return
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_length = headers.get(b"content-length", b"").decode("latin-1")
        if not raw_length.isdigit():
            await _refuse(send, 411, "length_required", "uploads must send a Content-Length header")
            return
        length, limit = int(raw_length), limits().max_upload_bytes
        if length > body_limit():
            detail = f"the upload is {length} bytes; files may be at most {limit} bytes"
            await _refuse(send, 413, "file_too_large", detail)
            return
        task_id = match["task_id"]
        if task_id is not None:
            waiting = await sync_to_async(_waiting_for_upload, thread_sensitive=False)(task_id, scope)
            if waiting is None:
                await _respond(send, 404, NOT_FOUND_BODY)  # as every refused read: reveals nothing
                return
            if not waiting:
                task_id = None  # the view answers 409 already_uploaded
        if await _over_quota(scope, send, length, new_task=match["task_id"] is None):
            return
        if task_id is not None:
            await areport_progress(task_id, "uploading", 0)
        upload = _Upload(receive, send, task_id, length)
        await self.app(scope, upload.receive, upload.send)


class _Upload:
    """One upload's body on its way to Django: counted, reported, and dropped when it stalls."""

    def __init__(self, receive: Receive, send: Send, task_id: str | None, length: int) -> None:
        self._receive = receive
        self._send = send
        self.task_id = task_id
        self.length = length
        self.received = 0
        self.reported = 0
        self.complete = False
        self.answered = False

    async def send(self, message: Message) -> None:
        if not self.answered:  # after a 408 from here, Django (which saw a disconnect) sends nothing
            await self._send(message)

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()  # Django listening for a disconnect while the view runs
        timeout = limits().upload_idle_timeout
        try:
            message = await asyncio.wait_for(self._receive(), timeout)
        except TimeoutError:
            self.complete = self.answered = True
            log.info("transcription: upload stalled at %s of %s bytes; dropped", self.received, self.length)
            detail = f"no data for {timeout:g} s; the upload was dropped"
            await self._fail("The upload stalled and was dropped; please upload the file again.")
            await _refuse(self._send, 408, "upload_timeout", detail)
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            await self._report()
        elif message["type"] == "http.disconnect":
            self.complete = True
            log.info("transcription: upload interrupted at %s of %s bytes", self.received, self.length)
            await self._fail(
                "The upload was interrupted before the whole file arrived; please upload it again."
            )
        return message

    async def _report(self) -> None:
        if self.task_id is None:
            return
        percentage = min(99, self.received * 100 // self.length) if self.length else 99
        if percentage > self.reported:
            self.reported = percentage
            await areport_progress(self.task_id, "uploading", percentage)

    async def _fail(self, user_message: str) -> None:
        if self.task_id is not None:
            detail = f"received {self.received} of {self.length} bytes"
            await areport_error(self.task_id, "upload_interrupted", user_message, detail)
