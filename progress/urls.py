"""HTTP routes of the progress app."""

from __future__ import annotations

from django.urls import re_path

from . import views

app_name = "progress"

urlpatterns = [
    re_path(r"^api/tasks/(?P<task_id>[^/]+)/?$", views.task_status, name="task-status"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/?$", views.task_page, name="task-page"),
]
