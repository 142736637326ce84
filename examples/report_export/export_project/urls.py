"""The progress app's routes (status, the task page), and one that starts an export."""

from __future__ import annotations

from django.urls import include, path

from .jobs import start_export

urlpatterns = [
    path("exports/", start_export),
    path("", include("progress.urls")),
]
