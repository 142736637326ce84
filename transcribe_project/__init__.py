"""The project: settings, ASGI entry and Celery app."""

from __future__ import annotations

# Loaded with Django, so shared tasks (transcription.tasks) bind to this app and its broker.
from .celery import app as celery_app

__all__ = ["celery_app"]
