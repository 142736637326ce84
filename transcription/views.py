"""The HTTP API of transcription jobs: upload, result, retry, and a CSRF token for scripts."""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import (
    SkipFile,
    StopUpload,
    TemporaryFileUploadHandler,
)
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from progress import report_error, report_progress, restart_task
from progress.conf import get_settings
from progress.models import Task
from progress.schemas import TaskStatus
from progress.views import invalid_task_id, unknown_task

from . import jobs
from .audio import HEADER_BYTES, is_audio
from .models import Transcription

log = logging.getLogger("transcription")

_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def _links(request: HttpRequest, task_id: str) -> dict[str, str]:
    scheme = "wss" if request.is_secure() else "ws"
    return {
        "task_id": task_id,
        "ws_url": f"{scheme}://{request.get_host()}/ws/tasks/{task_id}/",
        "status_url": f"/api/tasks/{task_id}/",
        "result_url": f"/api/tasks/{task_id}/result",
    }


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams the ``file`` field to a temporary file under MEDIA_ROOT, stopping past the size limit."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.too_large = False
        self.taken = False

    def new_file(self, field_name: str, *args: Any, **kwargs: Any) -> None:
        if field_name != "file" or self.taken:
            raise SkipFile()
        self.taken = True
        super().new_file(field_name, *args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.too_large = True
            raise StopUpload(connection_reset=True)  # the parser closes (and so deletes) the file
        return super().receive_data_chunk(raw_data, start)


def _csrf_refusal(request: HttpRequest) -> HttpResponse | None:
    """Django's CSRF check, run by hand so it happens after the upload handlers are in place."""
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, _csrf_checked, (), {})


def _csrf_checked(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    return HttpResponse()


@csrf_exempt  # checked in the view: CSRF reads the body, which must go through the handlers set first
@require_POST
def create_task(request: HttpRequest) -> JsonResponse:
    """POST /api/tasks/: store an uploaded audio file, queue its transcription, answer 201 with links."""
    chosen = request.GET.get("task_id")
    task_id = chosen if chosen is not None else uuid.uuid4().hex
    bad = invalid_task_id(task_id)
    if bad is not None:
        return bad
    handler = LimitedUploadHandler(request, get_settings().MAX_UPLOAD_BYTES)
    request.upload_handlers = [handler]
    response = _receive(request, task_id, chosen is not None, handler)
    if response.status_code >= 400 and chosen is not None and response.status_code != 409:
        detail = response.content.decode(errors="replace")
        report_error(task_id, "upload_rejected", "The upload was refused; see the upload's response.", detail)
    if response.status_code >= 400:
        for name in request.FILES:
            for upload in request.FILES.getlist(name):
                upload.close()  # deletes its temporary file now rather than at the end of the request
    return response


def _receive(request: HttpRequest, task_id: str, chosen: bool, handler: LimitedUploadHandler) -> JsonResponse:
    """Check the upload, store it and queue its job; the response."""
    try:
        refusal = _csrf_refusal(request)  # reads the body, through the handler
        upload = request.FILES.get("file")
    except (MultiPartParserError, SuspiciousOperation) as exc:
        return _error(400, "bad_multipart", f"the body is not a valid multipart/form-data upload: {exc}")
    if refusal is not None:
        return _error(403, "csrf_failed", "send the csrftoken cookie and its value in X-CSRFToken")
    limit = get_settings().MAX_UPLOAD_BYTES
    if handler.too_large:
        return _error(413, "file_too_large", f"files may be at most {limit} bytes")
    if upload is None:
        return _error(400, "no_file", "send the audio as the multipart form field 'file'")
    if upload.size == 0:
        return _error(400, "empty_file", "the uploaded file is empty")
    header = upload.read(max(HEADER_BYTES, 64))
    upload.seek(0)
    if not is_audio(header):
        return _error(415, "not_audio", "the file is not audio (WAV, FLAC, Ogg, MP3 or AIFF)")
    existing = Task.objects.filter(pk=task_id).first()
    ours = chosen and existing is not None and (existing.status, existing.stage) == ("running", "uploading")
    if existing is not None and not ours:  # the upload guard created it for this request
        return _error(409, "task_exists", f"a task {task_id!r} exists already; choose another id")
    stored = _store(upload, task_id)
    Transcription.objects.update_or_create(
        task_id=task_id,
        defaults={
            "audio_path": str(stored.relative_to(settings.MEDIA_ROOT)),
            "original_name": (upload.name or "")[:255],
            "size": upload.size or 0,
        },
    )
    # The task exists (queued) before anyone can be told its id, so no watcher arrives too early.
    report_progress(task_id, "queued", 0)
    try:
        jobs.enqueue(task_id, 1)
    except Exception as exc:
        log.exception("transcription: could not enqueue task %s", task_id)
        report_error(task_id, "enqueue_failed", "The job could not be queued; please retry.", repr(exc))
        return _error(503, "enqueue_failed", "the job queue is unavailable; retry the task later")
    return JsonResponse(_links(request, task_id), status=201)


def _store(upload: UploadedFile[Any], task_id: str) -> Path:
    """Move the upload's temporary file to MEDIA_ROOT/uploads/<task_id><suffix>."""
    suffix = Path(upload.name or "").suffix.lower()
    target = Path(settings.MEDIA_ROOT) / "uploads" / f"{task_id}{suffix if _SUFFIX.match(suffix) else ''}"
    target.parent.mkdir(parents=True, exist_ok=True)
    assert isinstance(upload, TemporaryUploadedFile)  # the only handler in use writes to disk
    os.replace(upload.temporary_file_path(), target)
    upload.close()  # Django's close tolerates the moved file; left to the garbage collector, it warns
    return target


@require_GET
def task_result(request: HttpRequest, task_id: str) -> JsonResponse:
    """GET /api/tasks/<id>/result: the transcript; 409 while the task is not complete."""
    bad = invalid_task_id(task_id)
    if bad is not None:
        return bad
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        return unknown_task(task_id)
    if task.status != TaskStatus.COMPLETE.value:
        detail = f"the task is {task.status} (stage {task.stage}, {task.percentage}%)"
        return JsonResponse({"error": "not_complete", "detail": detail, "status": task.status}, status=409)
    record = Transcription.objects.filter(pk=task_id).first()
    if record is None or record.result is None:
        return _error(404, "no_result", f"task {task_id!r} has no transcript")
    return JsonResponse(record.result)


@csrf_exempt  # checked in the view, to answer JSON rather than Django's HTML page
@require_POST
def retry_task(request: HttpRequest, task_id: str) -> JsonResponse:
    """POST /api/tasks/<id>/retry: re-queue a failed transcription as a new attempt (202)."""
    bad = invalid_task_id(task_id)
    if bad is not None:
        return bad
    if _csrf_refusal(request) is not None:
        return _error(403, "csrf_failed", "send the csrftoken cookie and its value in X-CSRFToken")
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        return unknown_task(task_id)
    if task.status != TaskStatus.FAILED.value:
        return JsonResponse(
            {"error": "not_failed", "detail": f"only failed tasks can be retried; this one is {task.status}"},
            status=409,
        )
    record = Transcription.objects.filter(pk=task_id).first()
    if record is None or not record.audio_path:
        return _error(409, "nothing_to_retry", "this task has no stored audio; upload the file again")
    attempt = restart_task(task_id, "retrying")
    if attempt is None:
        return _error(409, "not_failed", "the task changed while retrying; reload its status")
    try:
        jobs.enqueue(task_id, attempt)
    except Exception as exc:
        log.exception("transcription: could not enqueue task %s", task_id)
        report_error(task_id, "enqueue_failed", "The job could not be queued; please retry.", repr(exc))
        return _error(503, "enqueue_failed", "the job queue is unavailable; retry the task later")
    return JsonResponse({**_links(request, task_id), "attempt": attempt}, status=202)


@ensure_csrf_cookie
@require_GET
def csrf_token(request: HttpRequest) -> JsonResponse:
    """GET /api/csrf/: sets the csrftoken cookie and returns it, for scripts that upload."""
    return JsonResponse({"csrf_token": get_token(request)})


@ensure_csrf_cookie
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """GET /: upload an audio file and watch its transcription live."""
    from django.shortcuts import render

    from progress.schemas import ProgressStage

    stages = [s.value for s in ProgressStage]
    return render(request, "transcription/index.html", {"stages": stages})
