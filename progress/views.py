"""HTTP fallback: the same snapshot the WebSocket sends first, for polling clients."""

from __future__ import annotations

import json
import re

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import store
from .conf import get_settings
from .schemas import TASK_ID_PATTERN, ProgressStage

_TASK_ID = re.compile(TASK_ID_PATTERN)


def invalid_task_id(task_id: str) -> JsonResponse | None:
    """A 400 response for a task id that breaks the pattern, or None if it is fine."""
    if _TASK_ID.match(task_id):
        return None
    return JsonResponse(
        {"error": "invalid_task_id", "detail": "task ids match [A-Za-z0-9_-]{1,64}"}, status=400
    )


def unknown_task(task_id: str) -> JsonResponse:
    """The 404 for a task id nobody has reported."""
    return JsonResponse({"error": "unknown_task", "detail": f"no task {task_id!r}"}, status=404)


@require_GET
def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """GET /api/tasks/<task_id>/: the task's snapshot as JSON, or 404."""
    bad = invalid_task_id(task_id)
    if bad is not None:
        return bad
    snapshot = store.snapshot(task_id)
    if snapshot is None:
        return unknown_task(task_id)
    response = JsonResponse(snapshot.model_dump(mode="json"))
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def task_page(request: HttpRequest, task_id: str) -> HttpResponse:
    """GET /tasks/<task_id>/: a page that watches the task live with the reusable JS client."""
    bad = invalid_task_id(task_id)
    if bad is not None:
        return bad
    stages = [s.value for s in ProgressStage]
    context = {
        "task_id": task_id,
        "task_id_json": json.dumps(task_id),
        "stages": stages,
        "heartbeat_interval": get_settings().HEARTBEAT_INTERVAL,
    }
    return render(request, "progress/task.html", context)
