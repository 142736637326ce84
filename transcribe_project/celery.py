"""The Celery app: `celery -A transcribe_project worker` runs transcription jobs from Redis."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "transcribe_project.settings")

app = Celery("transcribe_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_reaper(**kwargs: Any) -> None:
    """Every worker also fails dead jobs, so a deployment with no server-side reaper still detects them."""
    from progress import webhooks
    from progress.reaper import start_thread

    start_thread()
    webhooks.start_thread()  # and delivers webhooks
