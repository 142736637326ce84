"""HTTP routes of the transcription app (included before progress.urls)."""

from __future__ import annotations

from django.urls import re_path

from . import pages, results, views

app_name = "transcription"

urlpatterns = [
    re_path(r"^$", pages.index, name="index"),
    re_path(r"^transcriptions/(?P<task_id>[^/]+)/?$", pages.task_page, name="task-page"),
    re_path(r"^api/transcriptions/?$", pages.transcriptions, name="transcriptions"),
    re_path(r"^api/tasks/?$", views.create_task, name="create-task"),
    re_path(r"^api/tasks/reserve/?$", views.reserve_task, name="reserve-task"),
    re_path(r"^api/tasks/(?P<task_id>[^/]+)/upload/?$", views.upload_task, name="task-upload"),
    re_path(r"^api/tasks/(?P<task_id>[^/]+)/result/?$", results.task_result, name="task-result"),
    re_path(
        r"^api/tasks/(?P<task_id>[^/]+)/result\.(?P<fmt>[a-z0-9]{1,8})$",
        results.task_result,
        name="task-download",
    ),
    re_path(r"^api/tasks/(?P<task_id>[^/]+)/retry/?$", views.retry_task, name="task-retry"),
    re_path(r"^api/csrf/?$", views.csrf_token, name="csrf-token"),
]
