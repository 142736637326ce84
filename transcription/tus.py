"""Resumable uploads on the tus 1.0 protocol (core, creation, termination, expiration, checksum).

``/api/uploads/``: POST makes an upload and reserves its task at once (stage ``uploading``; the
answer carries ``Upload-Task-Id`` and ``Upload-Watch-Token``); HEAD says how much the server has;
PATCH appends one chunk at that offset; DELETE abandons it. An ASGI app before Django, so a chunk
streams straight to disk (Django would read a whole body first): a dropped connection keeps what
arrived, and the client resumes from the server's offset. Only the owner (session or API key) that
made an upload sees it; anyone else gets the 404 of a missing one. Requests must carry
``Tus-Resumable``, a header no cross-site form can send, so cookie requests need no CSRF token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
from email.utils import formatdate

from asgiref.sync import sync_to_async

from progress import areport_progress, openapi, watch_token
from progress.openapi import Operation
from progress.views import NOT_FOUND_BODY

from . import resumable
from .conf import limits
from .models import Upload
from .stages import UPLOADING
from .upload import ASGIApp, Receive, Scope, Send

log = logging.getLogger("transcription")

VERSION = b"1.0.0"
EXTENSIONS = b"creation,termination,expiration,checksum"
PATH = re.compile(r"^/api/uploads/?(?:(?P<upload_id>[A-Za-z0-9_-]{1,40})/?)?$")
_writing: set[str] = set()
"""Uploads a PATCH of this process is writing now."""


_TUS = {"Tus-Resumable": "1.0.0 (required)"}
_MISSING = "no such upload, another's, or expired (the same answer)"
openapi.declare(
    "/api/uploads/",
    Operation("OPTIONS", "The server's tus version, extensions and limits", {204: "no body"}, auth=()),
    Operation(
        "POST",
        "Create a resumable upload; reserves its task (Upload-Task-Id, Upload-Watch-Token, Location)",
        {
            201: "created",
            400: "length_required, empty_file",
            412: "tus_version",
            413: "file_too_large",
            429: "too_many_uploads, storage_quota, daily_quota (Retry-After)",
        },
        headers={**_TUS, "Upload-Length": "the file's size", "Upload-Metadata": "filename <base64>"},
    ),
)
openapi.declare(
    "/api/uploads/{upload_id}",
    Operation(
        "HEAD",
        "How much the server has (Upload-Offset, Upload-Length)",
        {200: "no body", 404: _MISSING},
        headers=_TUS,
    ),
    Operation(
        "PATCH",
        "Append one chunk at Upload-Offset (application/offset+octet-stream)",
        {
            204: "stored (Upload-Offset)",
            404: _MISSING,
            409: "offset_mismatch",
            413: "chunk_too_large",
            415: "bad_content_type, not_audio",
            460: "checksum_mismatch",
        },
        headers={**_TUS, "Upload-Offset": "where the chunk starts", "Upload-Checksum": "sha1 <base64>"},
    ),
    Operation(
        "DELETE",
        "Abandon the upload: its bytes and its task go",
        {204: "deleted", 404: _MISSING},
        headers=_TUS,
    ),
)


def _headers(extra: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"tus-resumable", VERSION), (b"cache-control", b"no-store")]
    return headers + [(k.lower().encode(), v.encode("latin-1")) for k, v in (extra or {}).items()]


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
    if body:
        headers = [*headers, (b"content-type", b"application/json")]
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send, status: int, code: str, detail: str, extra: dict[str, str] | None = None
) -> None:
    log.info("transcription: tus refused with %s %s: %s", status, code, detail)
    await _answer(send, status, _headers(extra), json.dumps({"error": code, "detail": detail}).encode())


def _expires(at: float) -> str:
    return formatdate(at, usegmt=True)


class TusApp:
    """``/api/uploads/`` here; everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        method, upload_id = scope["method"], match["upload_id"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if method == "OPTIONS":
            extra = {
                "Tus-Version": "1.0.0",
                "Tus-Extension": EXTENSIONS.decode(),
                "Tus-Max-Size": str(limits().max_upload_bytes),
                "Tus-Checksum-Algorithm": "sha1",
            }
            await _answer(send, 204, _headers(extra))
            return
        if headers.get("tus-resumable") != "1.0.0":
            await _error(send, 412, "tus_version", "send Tus-Resumable: 1.0.0", {"Tus-Version": "1.0.0"})
            return
        if upload_id is None:
            if method == "POST":
                await self.create(scope, headers, send)
            else:
                await _error(send, 405, "method_not_allowed", "POST creates an upload here")
            return
        found = await sync_to_async(resumable.owned, thread_sensitive=False)(upload_id, scope)
        if found is None:
            await _answer(send, 404, _headers(), NOT_FOUND_BODY)  # missing, another's, expired: alike
            return
        if method == "HEAD":
            state = {
                "Upload-Offset": str(found.offset),
                "Upload-Length": str(found.length),
                "Upload-Expires": _expires(found.expires_at),
                "Upload-Task-Id": found.task_id,
            }
            await _answer(send, 200, _headers(state))
        elif method == "PATCH":
            if upload_id in _writing:  # a second request on one upload would write over the first
                await _error(send, 423, "upload_busy", "another request is writing this upload")
                return
            _writing.add(upload_id)
            try:
                await Chunk(found, headers, receive, send).run()
            finally:
                _writing.discard(upload_id)
        elif method == "DELETE":
            await sync_to_async(resumable.terminate, thread_sensitive=False)(found)
            await _answer(send, 204, _headers())
        else:
            await _error(send, 405, "method_not_allowed", "HEAD, PATCH or DELETE an upload")

    async def create(self, scope: Scope, headers: dict[str, str], send: Send) -> None:
        """POST: a new upload of ``Upload-Length`` bytes, and its task, reserved for the owner."""
        raw = headers.get("upload-length", "")
        if not raw.isdigit() or len(raw) > 15:
            await _error(
                send, 400, "length_required", "send Upload-Length (deferred lengths are not supported)"
            )
            return
        length, limit = int(raw), limits().max_upload_bytes
        if length > limit:
            await _error(send, 413, "file_too_large", f"files may be at most {limit} bytes")
            return
        if length == 0:
            await _error(send, 400, "empty_file", "the file is empty")
            return
        try:
            upload, cookie = await sync_to_async(resumable.create, thread_sensitive=False)(
                scope, headers, length
            )
        except resumable.Refusal as refused:
            await _error(send, refused.status, refused.code, refused.detail, refused.headers)
            return
        extra = {
            "Location": f"/api/uploads/{upload.upload_id}",
            "Upload-Task-Id": upload.task_id,
            "Upload-Watch-Token": watch_token(upload.task_id),
            "Upload-Expires": _expires(upload.expires_at),
            "Upload-Offset": "0",
        }
        response = _headers(extra)
        if cookie:
            response.append((b"set-cookie", cookie.encode("latin-1")))
        await _answer(send, 201, response)


class Chunk:
    """One PATCH: bytes appended at the server's offset as they arrive; what arrived is kept."""

    def __init__(self, upload: Upload, headers: dict[str, str], receive: Receive, send: Send) -> None:
        self.upload = upload
        self.headers = headers
        self.receive = receive
        self.send = send

    async def run(self) -> None:
        upload, headers = self.upload, self.headers
        if headers.get("content-type") != "application/offset+octet-stream":
            await _error(
                self.send, 415, "bad_content_type", "PATCH with Content-Type: application/offset+octet-stream"
            )
            return
        offset, length = headers.get("upload-offset", ""), headers.get("content-length", "")
        if not offset.isdigit() or int(offset) != upload.offset:
            detail = f"the upload is at offset {upload.offset}; send the chunk that starts there"
            await _error(self.send, 409, "offset_mismatch", detail, {"Upload-Offset": str(upload.offset)})
            return
        chunk_limit = limits().upload_chunk_bytes
        if not length.isdigit() or int(length) > chunk_limit:
            await _error(self.send, 413, "chunk_too_large", f"send at most {chunk_limit} bytes a request")
            return
        if upload.offset + int(length) > upload.length:
            await _error(self.send, 413, "past_upload_length", f"the upload is {upload.length} bytes long")
            return
        try:
            checksum = _checksum(headers.get("upload-checksum"))
        except ValueError:
            await _error(self.send, 400, "bad_checksum", "Upload-Checksum must be 'sha1 <base64 digest>'")
            return
        received, complete = await self._append(int(length), checksum)
        if received is None:  # the checksum did not match: the chunk was discarded
            await _error(self.send, 460, "checksum_mismatch", "the chunk does not match its Upload-Checksum")
            return
        before, new_offset = upload.offset, upload.offset + received
        saved = await sync_to_async(resumable.advance, thread_sensitive=False)(upload, new_offset)
        if not saved:
            await _error(self.send, 409, "offset_mismatch", "another request moved this upload meanwhile")
            return
        if before < resumable.EARLY_CHECK_BYTES <= new_offset < upload.length:
            refused = await sync_to_async(resumable.too_long_already, thread_sensitive=False)(upload)
            if refused is not None:
                await _error(self.send, *refused)
                return
        if upload.length:
            await areport_progress(upload.task_id, UPLOADING, min(99, new_offset * 100 // upload.length))
        if not complete:
            return  # the client went away; it resumes from new_offset
        if new_offset == upload.length:
            refusal = await sync_to_async(resumable.finish, thread_sensitive=False)(upload)
            if refusal is not None:
                status, code, detail = refusal
                await _error(self.send, status, code, detail, {"Upload-Offset": str(new_offset)})
                return
        await _answer(
            self.send,
            204,
            _headers({"Upload-Offset": str(new_offset), "Upload-Expires": _expires(upload.expires_at)}),
        )

    async def _append(self, length: int, checksum: bytes | None) -> tuple[int | None, bool]:
        """Write the body at the offset; (bytes kept, whether the whole body came). A chunk with a
        checksum is kept only whole and matching (None: it did not match)."""
        digest = hashlib.sha1() if checksum is not None else None
        written = 0
        complete = False
        with resumable.part_path(self.upload.upload_id).open("r+b") as out:
            out.seek(self.upload.offset)
            out.truncate()
            while True:
                try:
                    message = await asyncio.wait_for(self.receive(), limits().upload_idle_timeout)
                except TimeoutError:
                    break
                if message["type"] != "http.request":
                    break
                body = message.get("body", b"")
                if written + len(body) > length:
                    body = body[: length - written]
                out.write(body)
                if digest is not None:
                    digest.update(body)
                written += len(body)
                if not message.get("more_body", False):
                    complete = written == length
                    break
            if digest is not None and (not complete or digest.digest() != checksum):
                out.seek(self.upload.offset)
                out.truncate()
                return (None if complete else 0), complete
        return written, complete


def _checksum(raw: str | None) -> bytes | None:
    """The expected SHA-1 of an ``Upload-Checksum`` header (None: none sent); ValueError: unusable."""
    if raw is None:
        return None
    algorithm, _, value = raw.strip().partition(" ")
    if algorithm.lower() != "sha1":
        raise ValueError(algorithm)
    try:
        digest = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(value) from exc
    if len(digest) != hashlib.sha1().digest_size:
        raise ValueError(value)
    return digest
