"""Resumable uploads' state: the rows, the bytes on disk, who owns them, and how they end.

The tus protocol (``transcription.tus``) calls these from worker threads; nothing here speaks HTTP.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from http.cookies import SimpleCookie
from importlib import import_module
from pathlib import Path
from typing import Any

from django.conf import settings

from progress import delete_task, report_error, start_task
from progress.access import SESSION_OWNER_KEY, owners_of_scope
from progress.keys import bearer_of_headers

from .audio import declared_duration
from .conf import limits
from .models import Upload
from .quotas import owner_of, upload_refusal
from .stages import UPLOADING

Scope = dict[str, Any]


def parse_metadata(raw: str) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (a bad value is left out)."""
    found: dict[str, str] = {}
    for pair in raw.split(","):
        key, _, value = pair.strip().partition(" ")
        if not key:
            continue
        try:
            found[key] = base64.b64decode(value, validate=True).decode("utf-8") if value else ""
        except (binascii.Error, UnicodeDecodeError):
            continue
    return found


def part_path(upload_id: str) -> Path:
    """Where an unfinished upload's bytes are kept."""
    return Path(settings.MEDIA_ROOT) / "uploads" / "partial" / f"{upload_id}.part"


def owned(upload_id: str, scope: Scope) -> Upload | None:
    """The upload if the requester made it and it has not expired (an expired one is cleared now)."""
    from django.db import close_old_connections

    close_old_connections()
    upload = Upload.objects.filter(pk=upload_id).first()
    if upload is None or upload.owner not in owners_of_scope(scope):
        return None
    if upload.expires_at < time.time():
        expire(upload)
        return None
    return upload


class Refusal(Exception):
    """An answer other than success: status, error code, detail and headers."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def create(scope: Scope, headers: dict[str, str], length: int) -> tuple[Upload, str]:
    """A new upload of ``length`` bytes and its task, for the requester (a new anonymous session if it
    has none: the cookie to set, else ""); Refusal past a quota or with a key that opens nothing."""
    from django.db import close_old_connections

    close_old_connections()
    cookie = ""
    owner = owner_of(owners_of_scope(scope))
    if owner is None and bearer_of_headers(scope["headers"]) is not None:
        raise Refusal(401, "unauthorized", "the API key is not valid", {"WWW-Authenticate": "Bearer"})
    refusal = upload_refusal(scope, length, new_task=True, owner=owner)  # before a session is made
    if refusal is not None:
        raise Refusal(429, refusal.code, refusal.detail, {"Retry-After": str(refusal.retry_after)})
    if owner is None:
        owner, cookie = _new_session()
    filename = parse_metadata(headers.get("upload-metadata", "")).get("filename", "")[:255]
    task_id = start_task(UPLOADING, owner=owner)
    now = time.time()
    upload = Upload.objects.create(
        upload_id=secrets.token_urlsafe(24),
        task_id=task_id,
        owner=owner,
        length=length,
        filename=filename,
        created_at=now,
        expires_at=now + limits().upload_expiry,
    )
    path = part_path(upload.upload_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return upload, cookie


def _new_session() -> tuple[str, str]:
    """An anonymous session to own the upload, as the upload page's first reservation would make."""
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore()
    value = secrets.token_urlsafe(18)
    session[SESSION_OWNER_KEY] = value
    session.create()
    cookie: SimpleCookie = SimpleCookie()
    name = settings.SESSION_COOKIE_NAME
    cookie[name] = session.session_key or ""
    morsel = cookie[name]
    morsel["path"] = settings.SESSION_COOKIE_PATH
    morsel["httponly"] = settings.SESSION_COOKIE_HTTPONLY
    morsel["samesite"] = settings.SESSION_COOKIE_SAMESITE or "Lax"
    morsel["max-age"] = settings.SESSION_COOKIE_AGE
    if settings.SESSION_COOKIE_SECURE:
        morsel["secure"] = True
    return f"session:{value}", morsel.OutputString()


def terminate(upload: Upload) -> None:
    """DELETE: the bytes, the upload and its task go."""
    part_path(upload.upload_id).unlink(missing_ok=True)
    upload.delete()
    delete_task(upload.task_id)


def expire(upload: Upload) -> None:
    """An upload past its time: its bytes go, its task fails as ``upload_expired``."""
    part_path(upload.upload_id).unlink(missing_ok=True)
    Upload.objects.filter(pk=upload.upload_id).delete()
    message = "The upload did not finish in time; please upload the file again."
    report_error(
        upload.task_id, "upload_expired", message, f"{upload.offset} of {upload.length} bytes arrived"
    )


def expire_uploads(now: float | None = None) -> int:
    """Housekeeping: every upload past its time; how many."""
    stale = list(Upload.objects.filter(expires_at__lt=time.time() if now is None else now))
    for upload in stale:
        expire(upload)
    return len(stale)


def advance(upload: Upload, offset: int) -> bool:
    """Record the new offset, if no other request moved it meanwhile."""
    moved = Upload.objects.filter(pk=upload.upload_id, offset=upload.offset).update(offset=offset)
    upload.offset = offset
    return moved == 1


def finish(upload: Upload) -> tuple[int, str, str] | None:
    """The last byte arrived: the file becomes the task's audio and the job is queued (None), or it is
    refused (status, code, detail) and the task fails, with nothing left on disk."""
    from .views import store_finished_upload

    return store_finished_upload(
        upload.task_id, part_path(upload.upload_id), upload.filename, upload.length, upload
    )


EARLY_CHECK_BYTES = 64 * 1024
"""An upload's first bytes, where a WAV's header says how long the recording is."""


def too_long_already(upload: Upload) -> tuple[int, str, str] | None:
    """Once the first bytes are here: a WAV whose header declares more than the allowed length is
    refused now (413 ``audio_too_long``), not after its last byte; None when it may go on."""
    from .views import refuse_upload

    seconds = declared_duration(part_path(upload.upload_id), upload.length)
    limit = limits().max_audio_seconds
    if seconds is None or seconds <= limit:
        return None
    detail = f"the audio lasts {seconds:.0f} s; at most {limit:.0f} s are allowed"
    return refuse_upload(
        upload.task_id, part_path(upload.upload_id), upload.filename, (413, "audio_too_long", detail), upload
    )
