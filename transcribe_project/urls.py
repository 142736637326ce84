"""Project URLs."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),  # staff only: tasks, their events, retry
    path("", include("transcription.urls")),  # before progress.urls: POST /api/tasks/, result, retry
    path("", include("progress.urls")),
]
