"""HTTP views of a task: the snapshot for polling clients and the watching page, for its owner or a
token; cancel and delete, for its owner only."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from pydantic import BaseModel

from . import snapshots, store, tasks, webhooks
from .access import may_read, owners_of_request, token_valid
from .conf import get_settings
from .control import cancel_task, delete_task
from .keys import is_bearer, unauthorized
from .openapi import Media, Operation, build, operation
from .schemas import TASK_ID_PATTERN, SnapshotMessage
from .tasks import TaskInfo

__all__ = [
    "csrf_failed",
    "csrf_refused",
    "not_found",
    "owned_task",
    "page_not_found",
    "readable_task",
    "task",
    "task_cancel",
    "task_page",
    "task_status",
]

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


def _task_for(request: HttpRequest, task_id: str, *, token_counts: bool) -> TaskInfo | None:
    if not _TASK_ID.match(task_id):
        return None
    task = tasks.get(task_id)
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


def _never(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    return HttpResponse()


def csrf_refused(request: HttpRequest) -> bool:
    """Django's CSRF check, run by hand: by views that answer JSON, or that must read the body through
    their own upload handlers before the check reads it. A request made with an API key needs none."""
    if is_bearer(request):
        return False
    return CsrfViewMiddleware(_never).process_view(request, _never, (), {}) is not None


def csrf_failed() -> JsonResponse:
    """The JSON 403 for a request that failed the CSRF check."""
    detail = "send the csrftoken cookie and its value in X-CSRFToken"
    return JsonResponse({"error": "csrf_failed", "detail": detail}, status=403)


def _snapshot_response(task_id: str, request: HttpRequest) -> HttpResponse:
    """The snapshot frame a new watcher's socket is sent, byte for byte (``snapshots.read``)."""
    view = snapshots.read(task_id)
    if view is None:  # deleted between the two reads
        return not_found(request)
    response = HttpResponse(view.snapshot, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@readable_task()
def task_status(request: HttpRequest, task: TaskInfo) -> HttpResponse:
    """GET /api/tasks/<task_id>/: the task's snapshot as JSON."""
    return _snapshot_response(task.task_id, request)


@owned_task
def _task_delete(request: HttpRequest, task: TaskInfo) -> HttpResponse:
    if csrf_refused(request):
        return csrf_failed()
    delete_task(task.task_id)
    return HttpResponse(status=204)


_TOKEN = {"token": "a watch token (reads only)"}
_NOT_FOUND = "no such task, or not the requester's (the same answer)"


@operation(
    Operation(
        "GET",
        "The task's snapshot: stage, percentage, history, stages, place in line",
        {200: SnapshotMessage, 404: _NOT_FOUND},
        query=_TOKEN,
        auth=("session", "bearer", "token"),
    ),
    Operation("DELETE", "Delete the task and everything of it", {204: "deleted", 404: _NOT_FOUND}),
)
@csrf_exempt  # DELETE checks CSRF itself, to answer JSON
@require_http_methods(["GET", "DELETE"])
def task(request: HttpRequest, task_id: str) -> HttpResponse:
    """/api/tasks/<task_id>/: GET its snapshot (owner or token); DELETE it and everything of it (owner
    only, 204): afterwards it answers as a task that never existed."""
    if request.method == "DELETE":
        return _task_delete(request, task_id)
    return task_status(request, task_id)


@operation(
    Operation(
        "POST",
        "Cancel a waiting or running task",
        {200: SnapshotMessage, 404: _NOT_FOUND, 409: "not_running: it has ended"},
    )
)
@csrf_exempt  # checked here, to answer JSON
@require_POST
@owned_task
def task_cancel(request: HttpRequest, task: TaskInfo) -> HttpResponse:
    """POST /api/tasks/<task_id>/cancel: cancel the owner's waiting or running task (200, its new
    state); 409 ``not_running`` if it has ended already."""
    if csrf_refused(request):
        return csrf_failed()
    if not cancel_task(task.task_id):
        detail = (
            f"only a waiting or running task can be cancelled; this one is {store.status_of(task.task_id)}"
        )
        return JsonResponse({"error": "not_running", "detail": detail}, status=409)
    return _snapshot_response(task.task_id, request)


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
"""The task page runs only its own static scripts and styles, and nothing may frame it."""


def page_not_found(request: HttpRequest) -> HttpResponse:
    """The "No such task" page (404) for a page of a task the requester may not see."""
    response = render(request, "progress/not_found.html", status=404)
    response["Cache-Control"] = "no-store"
    return response


@operation(
    Operation(
        "GET",
        "A page that watches the task live",
        {200: Media("text/html", "the page"), 404: Media("text/html", "No such task")},
        query=_TOKEN,
        auth=("session", "token"),
    )
)
@require_GET
@readable_task(refuse=page_not_found)
def task_page(request: HttpRequest, task: TaskInfo) -> HttpResponse:
    """GET /tasks/<task_id>/: a page that watches the task live with the reusable JS client."""
    token = request.GET.get("token") or ""
    context = {
        "task_id": task.task_id,
        "client_options": {
            "taskId": task.task_id,
            "heartbeatInterval": get_settings().HEARTBEAT_INTERVAL,
            "token": token or None,
        },
        "stages": get_settings().stages.names,
    }
    response = render(request, "progress/task.html", context)
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"  # the token is in this page's URL
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


class WebhookSecretBody(BaseModel):
    """The key that signs the user's webhooks (HMAC-SHA256; see progress.webhooks)."""

    secret: str


@operation(
    Operation(
        "GET", "The signing secret of the user's webhooks", {200: WebhookSecretBody, 401: "no account"}
    ),
    Operation(
        "POST", "A new signing secret (the old stops verifying)", {200: WebhookSecretBody, 401: "no account"}
    ),
)
@csrf_exempt  # checked here, to answer JSON
@require_http_methods(["GET", "POST"])
def webhook_secret(request: HttpRequest) -> HttpResponse:
    """GET /api/webhooks/secret: the signing secret of the user's webhooks; POST makes a new one."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return unauthorized()  # the same answer as to a wrong or revoked key
    if request.method == "POST" and csrf_refused(request):
        return csrf_failed()
    secret = webhooks.secret_for(user, rotate=request.method == "POST")
    return JsonResponse({"secret": secret}, headers={"Cache-Control": "no-store"})


@operation(
    Operation("GET", "This document: OpenAPI 3.1", {200: Media("application/json", "OpenAPI 3.1")}, auth=())
)
@require_GET
def openapi_document(request: HttpRequest) -> JsonResponse:
    """GET /api/openapi.json: the OpenAPI description of the project's progress and app routes."""
    return JsonResponse(_document())


@functools.cache
def _document() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("django-task-progress")
    except PackageNotFoundError:  # run from a checkout
        release = "dev"
    return build("Task progress", release)
