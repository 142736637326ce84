"""HTTP routes of the progress app."""

from __future__ import annotations

from django.urls import re_path

from . import health, metrics, views

app_name = "progress"

urlpatterns = [
    re_path(r"^api/tasks/(?P<task_id>[^/]+)/?$", views.task, name="task-status"),
    re_path(r"^api/tasks/(?P<task_id>[^/]+)/cancel/?$", views.task_cancel, name="task-cancel"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/?$", views.task_page, name="task-page"),
    re_path(r"^api/webhooks/secret/?$", views.webhook_secret, name="webhook-secret"),
    re_path(r"^api/openapi\.json$", views.openapi_document, name="openapi"),
    re_path(r"^healthz/?$", health.healthz, name="healthz"),
    re_path(r"^readyz/?$", health.readyz, name="readyz"),
    re_path(r"^metrics/?$", metrics.metrics_view, name="metrics"),
]
