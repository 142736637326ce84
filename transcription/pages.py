"""The pages people use: upload and watch (``/``), one transcription (``/transcriptions/<id>/``), a list."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from progress import tasks, watch_token
from progress.access import may_read, owners_of_request
from progress.conf import get_settings
from progress.openapi import Media, Operation, operation
from progress.tasks import TaskInfo
from progress.views import page_not_found, readable_task

from .api import TaskRows
from .conf import limits
from .models import Transcription
from .retention import FINAL_ERRORS

LIST_LENGTH = 50
"""How many of a session's transcriptions its list shows, newest first."""


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; media-src 'self' blob:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
"""The pages run only their own static scripts: a file name or transcript that slipped into the markup
could not run, and nothing can frame them. ``blob:`` media: the browser reads a picked file's duration."""


def _page(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def share_url(task_id: str, token: str) -> str:
    """The transcription's page with the task's watch token: whoever has the link may watch and download."""
    return f"/transcriptions/{task_id}/?token={token}"


def _row(task: TaskInfo, record: Transcription | None, *, owned: bool) -> dict[str, Any]:
    """What a page needs to draw one task before its socket says more."""
    token = watch_token(task.task_id)
    return {
        "task_id": task.task_id,
        "name": record.original_name if record else "",
        "size": record.size if record else None,
        "duration": record.duration if record else None,
        "status": task.status,
        "stage": task.stage,
        "percentage": task.percentage,
        "attempt": task.attempt,
        "created_at": task.created_at.isoformat(),
        "token": token,
        "share_url": share_url(task.task_id, token),
        "owned": owned,
    }


def _options() -> dict[str, Any]:
    return {
        "heartbeatInterval": get_settings().HEARTBEAT_INTERVAL,
        "stages": list(get_settings().stages.working),
        "maxUploadBytes": limits().max_upload_bytes,
        "uploadChunkBytes": limits().upload_chunk_bytes,
        "finalErrors": sorted(FINAL_ERRORS),
    }


@operation(
    Operation(
        "GET", "The upload page and the session's transcriptions", {200: Media("text/html", "the page")}
    )
)
@ensure_csrf_cookie
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """GET /: upload audio files and watch their transcriptions live; the session's list below.

    It makes no session: a visitor's first reservation does, so one who uploads nothing leaves no row."""
    return _page(request, "transcription/index.html", {"options": {**_options(), "mode": "index"}})


@operation(
    Operation(
        "GET",
        "One transcription's page: live progress, then the transcript",
        {200: Media("text/html", "the page"), 404: Media("text/html", "No such task")},
        query={"token": "a watch token (a share link)"},
        auth=("session", "token"),
    )
)
@ensure_csrf_cookie
@require_GET
@readable_task(refuse=page_not_found)
def task_page(request: HttpRequest, task: TaskInfo) -> HttpResponse:
    """GET /transcriptions/<id>/: one task, live, with transcript and downloads; for its owner or a token."""
    owned = may_read(task.owner, owners_of_request(request))
    row = _row(task, Transcription.objects.filter(pk=task.task_id).first(), owned=owned)
    options = {**_options(), "mode": "task", "task": row}
    response = _page(request, "transcription/task.html", {"options": options, "name": row["name"]})
    response["Referrer-Policy"] = "no-referrer"  # the token is in this page's URL
    return response


@operation(Operation("GET", "The requester's own tasks, newest first", {200: TaskRows}))
@require_GET
def transcriptions(request: HttpRequest) -> JsonResponse:
    """GET /api/transcriptions/: the requester's own tasks, newest first (an empty list for strangers)."""
    owners = owners_of_request(request)
    mine = tasks.select(owners=owners, newest_first=True, limit=LIST_LENGTH) if owners else []
    records = Transcription.objects.in_bulk([t.task_id for t in mine])
    response = JsonResponse({"tasks": [_row(t, records.get(t.task_id), owned=True) for t in mine]})
    response["Cache-Control"] = "no-store"
    return response
