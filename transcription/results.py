"""Reading a finished transcription: the transcript as JSON, and as downloads in four formats."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from progress.openapi import Operation, operation
from progress.schemas import TaskStatus
from progress.tasks import TaskInfo
from progress.views import readable_task

from .api import Transcript
from .formats import FORMATS, download_name, render
from .models import Transcription
from .views import error_response


def _finished(task: TaskInfo) -> tuple[Transcription | None, JsonResponse | None]:
    """The task's stored transcript, or the refusal: 409 while it is not complete, 404 without one."""
    if task.status != TaskStatus.COMPLETE.value:
        detail = f"the task is {task.status} (stage {task.stage}, {task.percentage}%)"
        return None, JsonResponse(
            {"error": "not_complete", "detail": detail, "status": task.status}, status=409
        )
    record = Transcription.objects.filter(pk=task.task_id).first()
    if record is None or record.result is None:
        return None, error_response(404, "no_result", "this task has no transcript")
    return record, None


@operation(
    Operation(
        "GET",
        "The transcript (JSON, or a download as txt, srt, vtt or json)",
        {
            200: Transcript,
            400: "bad_format",
            404: "no such task, or not the requester's (the same answer)",
            409: "not_complete: the task has not completed",
        },
        query={"token": "a watch token (reads only)", "format": "txt, srt, vtt or json: a download"},
        auth=("session", "bearer", "token"),
    )
)
@require_GET
@readable_task()
def task_result(request: HttpRequest, task: TaskInfo, fmt: str | None = None) -> HttpResponse:
    """GET /api/tasks/<id>/result[.txt|.json|.srt|.vtt] (or ?format=): the transcript; 409 until complete.

    Without a format: the transcript as JSON, for scripts. With one: a download named after the upload.
    """
    fmt = fmt or request.GET.get("format")
    if fmt is not None and fmt not in FORMATS:
        return error_response(400, "bad_format", f"format must be one of {', '.join(FORMATS)}")
    record, refusal = _finished(task)
    if refusal is not None:
        return refusal
    assert record is not None
    assert record.result is not None
    result: dict[str, Any] = record.result
    if fmt is None:
        response: HttpResponse = JsonResponse(result)
    else:
        body, content_type = render(result, fmt)
        response = HttpResponse(body, content_type=content_type)
        disposition = content_disposition_header(True, download_name(record.original_name, fmt))
        if disposition is not None:
            response["Content-Disposition"] = disposition
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
