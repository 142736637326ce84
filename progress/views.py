"""HTTP reads of a task: the snapshot for polling clients and the watching page, for its owner or a token."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import store
from .access import may_read, owners_of_request, token_valid
from .conf import get_settings
from .models import Task
from .schemas import TASK_ID_PATTERN, ProgressStage

__all__ = ["not_found", "owned_task", "page_not_found", "readable_task", "task_page", "task_status"]

_TASK_ID = re.compile(TASK_ID_PATTERN)
TaskView = Callable[..., HttpResponse]
"""A view given the task (and the URL's other keyword arguments)."""
TaskIdView = Callable[..., HttpResponse]
Refusal = Callable[[HttpRequest], HttpResponse]

NOT_FOUND_BODY = b'{"error": "not_found", "detail": "no such task"}'
"""The one answer to every refused read: a malformed id, a missing task, a task that is not yours."""


def not_found(request: HttpRequest | None = None) -> HttpResponse:
    """The 404 for a task the requester may not see, identical whether or not it exists."""
    response = HttpResponse(NOT_FOUND_BODY, status=404, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


def _task_for(request: HttpRequest, task_id: str, *, token_counts: bool) -> Task | None:
    if not _TASK_ID.match(task_id):
        return None
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        return None
    if may_read(task.owner, owners_of_request(request)):
        return task
    if token_counts and token_valid(task_id, request.GET.get("token")):
        return task
    return None


def _guarded(*, token_counts: bool, refuse: Refusal) -> Callable[[TaskView], TaskIdView]:
    def decorate(view: TaskView) -> TaskIdView:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, task_id: str, **kwargs: Any) -> HttpResponse:
            task = _task_for(request, task_id, token_counts=token_counts)
            if task is None:
                return refuse(request)
            return view(request, task, **kwargs)

        return wrapped

    return decorate


def readable_task(
    refuse: Callable[[HttpRequest], HttpResponse] = not_found,
) -> Callable[[TaskView], TaskIdView]:
    """A view of one task for its owner or a holder of its ``?token=``; anyone else gets ``refuse``."""
    return _guarded(token_counts=True, refuse=refuse)


def owned_task(view: TaskView) -> TaskIdView:
    """A view that acts on one task, for its owner only (a watch token grants reading, not acting)."""
    return _guarded(token_counts=False, refuse=not_found)(view)


@require_GET
@readable_task()
def task_status(request: HttpRequest, task: Task) -> HttpResponse:
    """GET /api/tasks/<task_id>/: the task's snapshot as JSON."""
    snapshot = store.snapshot(task.task_id)
    if snapshot is None:  # deleted between the two reads
        return not_found(request)
    response = JsonResponse(snapshot.model_dump(mode="json"))
    response["Cache-Control"] = "no-store"
    return response


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
"""The task page runs only its own static scripts and styles, and nothing may frame it."""


def page_not_found(request: HttpRequest) -> HttpResponse:
    """The "No such task" page (404) for a page of a task the requester may not see."""
    response = render(request, "progress/not_found.html", status=404)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@readable_task(refuse=page_not_found)
def task_page(request: HttpRequest, task: Task) -> HttpResponse:
    """GET /tasks/<task_id>/: a page that watches the task live with the reusable JS client."""
    token = request.GET.get("token") or ""
    context = {
        "task_id": task.task_id,
        "client_options": {
            "taskId": task.task_id,
            "heartbeatInterval": get_settings().HEARTBEAT_INTERVAL,
            "token": token or None,
        },
        "stages": [s.value for s in ProgressStage],
    }
    response = render(request, "progress/task.html", context)
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"  # the token is in this page's URL
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
