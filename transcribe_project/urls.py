"""Project URLs."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("transcription.urls")),  # before progress.urls: POST /api/tasks/, result, retry
    path("", include("progress.urls")),
]
