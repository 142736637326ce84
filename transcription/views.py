"""The HTTP API that changes transcription jobs: reserve, upload, retry, and a CSRF token for scripts."""

from __future__ import annotations

import logging
import os
import re
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
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import get_token
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from progress import (
    outbound,
    report_error,
    report_progress,
    restart_task,
    start_task,
    tasks,
    watch_token,
    webhooks,
)
from progress.access import owner_key
from progress.openapi import Operation, operation
from progress.schemas import TaskStatus
from progress.state import RESTARTABLE_VALUES
from progress.tasks import TaskInfo
from progress.views import csrf_failed, csrf_refused, not_found, owned_task

from . import retention
from .api import CsrfToken, Reservation, Retried, TaskLinks
from .audio import HEADER_BYTES, AudioError, is_audio
from .audio import duration as audio_duration
from .conf import limits
from .models import Transcription
from .pages import share_url
from .runners import enqueue_or_fail
from .stages import QUEUED, UPLOADING

log = logging.getLogger("transcription")

_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


def error_response(status: int, code: str, detail: str) -> JsonResponse:
    """The JSON refusal ``{"error": code, "detail": detail}``, logged as one line."""
    log.info("transcription: refused with %s %s: %s", status, code, detail)  # one line per limit hit
    return JsonResponse({"error": code, "detail": detail}, status=status)


def task_links(request: HttpRequest, task_id: str) -> dict[str, str]:
    """Where to watch and read a task; every link carries a watch token, so it can be shared."""
    token = watch_token(task_id)
    query = f"?token={token}"  # URL-safe as it is
    scheme = "wss" if request.is_secure() else "ws"
    return {
        "task_id": task_id,
        "watch_token": token,
        "ws_url": f"{scheme}://{request.get_host()}/ws/tasks/{task_id}/{query}",
        "status_url": f"/api/tasks/{task_id}/{query}",
        "result_url": f"/api/tasks/{task_id}/result{query}",
        "share_url": share_url(task_id, token),
    }


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams the ``file`` field to a temporary file under MEDIA_ROOT, stopping past the size limit."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.too_large = False
        self.taken = False
        self.client_name = ""
        """The name the client gave the file (kept for the owner's list even when it is refused)."""

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        if field_name != "file" or self.taken:
            raise SkipFile()
        self.taken = True
        self.client_name = file_name
        super().new_file(field_name, file_name, *args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.too_large = True
            raise StopUpload(connection_reset=True)  # the parser closes (and so deletes) the file
        return super().receive_data_chunk(raw_data, start)


def _csrf_failed() -> JsonResponse:
    log.info("transcription: refused with 403 csrf_failed")
    return csrf_failed()


_FORM = {
    "file": "the audio (WAV, FLAC, Ogg, MP3 or AIFF)",
    "callback_url": "optional, with an account: POSTed a signed event when the task ends",
}
_REFUSALS: dict[int, Any] = {
    400: "bad_multipart, no_file, empty_file, callback_refused, callback_needs_account",
    403: "csrf_failed (a cookie session without its CSRF token)",
    411: "length_required",
    413: "file_too_large, audio_too_long",
    415: "not_audio, invalid_audio",
    429: "too_many_uploads, storage_quota, daily_quota (with Retry-After)",
    503: "enqueue_failed",
}


@operation(
    Operation(
        "POST", "Upload audio: a new task, queued once stored", {201: TaskLinks, **_REFUSALS}, form=_FORM
    )
)
@csrf_exempt  # checked in the view: CSRF reads the body, which must go through the handlers set first
@require_POST
def create_task(request: HttpRequest) -> HttpResponse:
    """POST /api/tasks/: store an uploaded audio file as a new task of the requester's, queue it (201)."""
    if "task_id" in request.GET:
        return error_response(
            400,
            "task_id_not_allowed",
            "task ids are made by the server: POST /api/tasks/reserve for one to watch the upload",
        )
    return _upload(request, None)


MAX_RESERVATIONS = 8
"""Reserved tasks one owner may have waiting for their uploads at once."""


def _may_reserve(owner: str) -> bool:
    """Whether ``owner`` may reserve one more task (their expired reservations fail first)."""
    retention.expire_reservations(owner)
    waiting = tasks.select(owners=[owner], status=TaskStatus.RUNNING.value, stage=UPLOADING)
    return len(waiting) < MAX_RESERVATIONS


@operation(
    Operation(
        "POST",
        "Reserve a task to upload into (its watchers follow the upload)",
        {201: Reservation, 403: "csrf_failed", 429: "too_many_reservations, too_many_uploads"},
    )
)
@csrf_exempt  # checked in the view, to answer JSON rather than Django's HTML page
@require_POST
def reserve_task(request: HttpRequest) -> HttpResponse:
    """POST /api/tasks/reserve: a new task in stage ``uploading``, for this session to upload into (201)."""
    if csrf_refused(request):
        return _csrf_failed()
    owner = owner_key(request)
    if not _may_reserve(owner):
        detail = "this session has too many uploads waiting; finish or abandon one first"
        return error_response(429, "too_many_reservations", detail)
    task_id = start_task(UPLOADING, owner=owner)
    return JsonResponse(
        {**task_links(request, task_id), "upload_url": f"/api/tasks/{task_id}/upload"}, status=201
    )


@operation(
    Operation(
        "POST",
        "Upload the audio of a reserved task",
        {
            201: TaskLinks,
            404: "no such task, or not the requester's (the same answer)",
            409: "already_uploaded",
            **_REFUSALS,
        },
        form=_FORM,
    )
)
@csrf_exempt  # checked in the view: CSRF reads the body, which must go through the handlers set first
@require_POST
@owned_task
def upload_task(request: HttpRequest, task: TaskInfo) -> HttpResponse:
    """POST /api/tasks/<id>/upload: the audio of a task reserved by this session (201)."""
    if (task.status, task.stage) != (TaskStatus.RUNNING.value, UPLOADING):
        return error_response(409, "already_uploaded", "this task has its upload already; reserve a new one")
    handler = LimitedUploadHandler(request, limits().max_upload_bytes)
    response = _upload(request, task.task_id, handler)
    if response.status_code >= 400 and response.status_code not in (404, 409):  # 404: deleted meanwhile
        # The refused file keeps its name, so the owner's list says which one it was.
        Transcription.objects.get_or_create(
            task_id=task.task_id, defaults={"original_name": handler.client_name[:255]}
        )
        detail = response.content.decode(errors="replace")
        report_error(
            task.task_id, "upload_rejected", "The upload was refused; see the upload's response.", detail
        )
    return response


def _upload(
    request: HttpRequest, reserved: str | None, handler: LimitedUploadHandler | None = None
) -> HttpResponse:
    """Read, check and store an upload, then queue its job, into ``reserved`` or else a new task."""
    handler = handler or LimitedUploadHandler(request, limits().max_upload_bytes)
    request.upload_handlers = [handler]
    try:
        return _receive(request, reserved, handler)
    finally:
        for name in request.FILES:
            for upload in request.FILES.getlist(name):
                upload.close()  # deletes an unused temporary file now rather than at the end of the request


def _receive(request: HttpRequest, reserved: str | None, handler: LimitedUploadHandler) -> HttpResponse:
    try:
        refused = csrf_refused(request)  # reads the body, through the handler
        upload = request.FILES.get("file")
    except (MultiPartParserError, SuspiciousOperation) as exc:
        return error_response(
            400, "bad_multipart", f"the body is not a valid multipart/form-data upload: {exc}"
        )
    if refused:
        return _csrf_failed()
    limit = limits().max_upload_bytes
    if handler.too_large:
        return error_response(413, "file_too_large", f"files may be at most {limit} bytes")
    if upload is None:
        return error_response(400, "no_file", "send the audio as the multipart form field 'file'")
    if upload.size == 0:
        return error_response(400, "empty_file", "the uploaded file is empty")
    header = upload.read(max(HEADER_BYTES, 64))
    upload.seek(0)
    if not is_audio(header):
        return error_response(415, "not_audio", "the file is not audio (WAV, FLAC, Ogg, MP3 or AIFF)")
    assert isinstance(upload, TemporaryUploadedFile)  # the only handler in use writes to disk
    seconds, too_long = _duration(Path(upload.temporary_file_path()))
    if too_long is not None:
        return too_long
    callback = request.POST.get("callback_url") or None
    if callback is not None and (refused_callback := _callback_refusal(request, callback)) is not None:
        return refused_callback
    # Queued means ready to run: any runner's turn may claim it, so it is queued only once stored.
    task_id = reserved or start_task(UPLOADING, owner=owner_key(request))
    if callback is not None:
        webhooks.register(task_id, callback, request.user, request.build_absolute_uri("/"))
    try:
        with transaction.atomic():  # the claim: of two uploads into one reserved task, one wins
            Transcription.objects.create(task_id=task_id, original_name=(upload.name or "")[:255])
    except IntegrityError:
        return error_response(409, "already_uploaded", "this task has its upload already; reserve a new one")
    stored = _store(upload, task_id)
    Transcription.objects.filter(pk=task_id).update(
        audio_path=str(stored.relative_to(settings.MEDIA_ROOT)), size=upload.size or 0, duration=seconds
    )
    if not _queued(task_id, stored):
        return not_found(request)
    failed = _enqueue(task_id, 1)
    return failed or JsonResponse(task_links(request, task_id), status=201)


def _callback_refusal(request: HttpRequest, url: str) -> JsonResponse | None:
    """Why ``callback_url`` cannot be used (400), or None: it needs an account, whose secret signs
    the webhook, and an http(s) URL whose every address is outside our network."""
    if not request.user.is_authenticated:
        detail = "a callback_url needs an account (log in, or send an API key): its secret signs the webhook"
        return error_response(400, "callback_needs_account", detail)
    if len(url) > 2000:
        return error_response(400, "callback_refused", "callback_url is longer than 2000 characters")
    try:
        outbound.resolve(url)
    except outbound.Refused as exc:
        return error_response(400, "callback_refused", f"callback_url is refused: {exc}")
    return None


Refusal = tuple[int, str, str]
"""An upload refused: its status, error code and detail."""


def length_refusal(path: Path) -> tuple[float | None, Refusal | None]:
    """The audio's length, or why not: 415 ``invalid_audio`` when its header is damaged or does not
    say, 413 ``audio_too_long`` past the limit. Nothing is decoded here."""
    try:
        seconds = audio_duration(path)
    except AudioError as exc:
        return None, (415, exc.error_code, exc.user_message)
    limit = limits().max_audio_seconds
    if seconds > limit:
        return seconds, (
            413,
            "audio_too_long",
            f"the audio lasts {seconds:.0f} s; at most {limit:.0f} s are allowed",
        )
    return seconds, None


def store_finished_upload(
    task_id: str, path: Path, name: str, size: int, upload: Any = None
) -> Refusal | None:
    """A whole file at ``path`` (a finished resumable upload) becomes the task's audio and its job is
    queued (None); or it is refused: the task fails (``upload_rejected``), the file and ``upload`` go."""
    with path.open("rb") as audio:
        header = audio.read(max(HEADER_BYTES, 64))
    seconds, refusal = None, None
    if not is_audio(header):
        refusal = (415, "not_audio", "the file is not audio (WAV, FLAC, Ogg, MP3 or AIFF)")
    else:
        seconds, refusal = length_refusal(path)
    if refusal is not None:
        return refuse_upload(task_id, path, name, refusal, upload)
    if upload is not None:
        upload.delete()
    target = _audio_path(task_id, name)
    os.replace(path, target)
    Transcription.objects.create(
        task_id=task_id,
        original_name=name[:255],
        audio_path=str(target.relative_to(settings.MEDIA_ROOT)),
        size=size,
        duration=seconds,
    )
    if not _queued(task_id, target):
        return 404, "not_found", "no such task"
    if not enqueue_or_fail(task_id, 1):
        return 503, "enqueue_failed", "the job queue is unavailable; retry the task later"
    return None


def refuse_upload(task_id: str, path: Path, name: str, refusal: Refusal, upload: Any = None) -> Refusal:
    """A resumable upload refused: its bytes and ``upload`` go, the task fails (``upload_rejected``)."""
    path.unlink(missing_ok=True)
    if upload is not None:
        upload.delete()
    Transcription.objects.get_or_create(task_id=task_id, defaults={"original_name": name[:255]})
    report_error(task_id, "upload_rejected", "The upload was refused; see the upload's response.", refusal[2])
    return refusal


def _duration(path: Path) -> tuple[float | None, JsonResponse | None]:
    """``length_refusal`` as a JSON answer."""
    seconds, refusal = length_refusal(path)
    if refusal is not None:
        return seconds, error_response(*refusal)
    return seconds, None


def _enqueue(task_id: str, attempt: int) -> JsonResponse | None:
    """Hand an attempt to the job runner; a 503 (the task failed) when the queue is unavailable."""
    if enqueue_or_fail(task_id, attempt):
        return None
    return error_response(503, "enqueue_failed", "the job queue is unavailable; retry the task later")


def _audio_path(task_id: str, name: str) -> Path:
    """Where a task's audio is kept: MEDIA_ROOT/uploads/<task_id><suffix of the upload's name>."""
    suffix = Path(name).suffix.lower()
    return Path(settings.MEDIA_ROOT) / "uploads" / f"{task_id}{suffix if _SUFFIX.match(suffix) else ''}"


def _queued(task_id: str, stored: Path) -> bool:
    """Report the stored task queued; False (and nothing of it kept) when its owner deleted it while
    the file was on its way."""
    if report_progress(task_id, QUEUED, 0) or tasks.exists(task_id):
        return True
    stored.unlink(missing_ok=True)
    Transcription.objects.filter(pk=task_id).delete()
    return False


def _store(upload: UploadedFile[Any], task_id: str) -> Path:
    """Move the upload's temporary file to where the task's audio is kept."""
    target = _audio_path(task_id, upload.name or "")
    target.parent.mkdir(parents=True, exist_ok=True)
    assert isinstance(upload, TemporaryUploadedFile)  # the only handler in use writes to disk
    os.replace(upload.temporary_file_path(), target)
    upload.close()  # Django's close tolerates the moved file; left to the garbage collector, it warns
    return target


@operation(
    Operation(
        "POST",
        "Retry a failed or cancelled task as a new attempt",
        {
            202: Retried,
            404: "no such task, or not the requester's (the same answer)",
            409: "not_failed, too_many_attempts, nothing_to_retry",
            503: "enqueue_failed",
        },
    )
)
@csrf_exempt  # checked in the view, to answer JSON rather than Django's HTML page
@require_POST
@owned_task
def retry_task(request: HttpRequest, task: TaskInfo) -> HttpResponse:
    """POST /api/tasks/<id>/retry: re-queue the owner's failed or cancelled transcription as a new
    attempt (202)."""
    if csrf_refused(request):
        return _csrf_failed()
    if task.status not in RESTARTABLE_VALUES:
        detail = f"only failed or cancelled tasks can be retried; this one is {task.status}"
        return JsonResponse({"error": "not_failed", "detail": detail}, status=409)
    allowed = limits().max_attempts
    if task.attempt >= allowed:
        return error_response(
            409, "too_many_attempts", f"a task may run at most {allowed} times; upload the file again"
        )
    record = Transcription.objects.filter(pk=task.task_id).first()
    if record is None or not record.audio_path:
        return error_response(409, "nothing_to_retry", "this task has no stored audio; upload the file again")
    attempt = restart_task(task.task_id, "retrying")
    if attempt is None:
        return error_response(409, "not_failed", "the task changed while retrying; reload its status")
    failed = _enqueue(task.task_id, attempt)
    return failed or JsonResponse({**task_links(request, task.task_id), "attempt": attempt}, status=202)


@operation(
    Operation("GET", "A CSRF token for a cookie session's uploads", {200: CsrfToken}, auth=("session",))
)
@ensure_csrf_cookie
@require_GET
def csrf_token(request: HttpRequest) -> JsonResponse:
    """GET /api/csrf/: sets the csrftoken cookie and returns it, for scripts that upload."""
    return JsonResponse({"csrf_token": get_token(request)})
