"""An export job in a thread: it claims its task, reports each stage, and completes."""

from __future__ import annotations

import threading
import time

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from progress import claim, start_task, watch_token

STEP_SECONDS = 0.3


def export(task_id: str) -> None:
    """Fetch rows, then render them: the job knows its stages and nothing of the transport."""
    job = claim(task_id, 1)
    if job is None:
        return
    with job:
        for done in range(0, 101, 50):
            job.check()
            job.progress("fetching", done, f"{done * 12} of 1200 rows")
            time.sleep(STEP_SECONDS)
        for done in range(0, 101, 50):
            job.progress("rendering", done)
            time.sleep(STEP_SECONDS)
        job.result = {"rows": 1200}  # complete, once the body ends


@csrf_exempt  # an example: a real project keeps CSRF on, or requires a login
@require_POST
def start_export(request: HttpRequest) -> JsonResponse:
    """POST /exports/: start an export; its id, and the page that watches it."""
    task_id = start_task("queued")
    threading.Thread(target=export, args=(task_id,), daemon=True).start()
    token = watch_token(task_id)
    return JsonResponse(
        {"task_id": task_id, "token": token, "page": f"/tasks/{task_id}/?token={token}"}, status=201
    )
