"""Django app configuration for progress."""

from __future__ import annotations

from django.apps import AppConfig, apps


class ProgressConfig(AppConfig):
    """Connects the settings cache to Django's setting_changed signal; filters the servers' log lines."""

    name = "progress"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Forget cached PROGRESS settings when tests override them; keep tokens out of server logs."""
        from django.test.signals import setting_changed

        from .conf import _reset
        from .logs import redact_server_logs

        setting_changed.connect(_reset)
        redact_server_logs()
        if apps.is_installed("django.contrib.auth"):
            from django.contrib.auth.signals import user_logged_in

            from .access import adopt_session_tasks

            user_logged_in.connect(adopt_session_tasks, dispatch_uid="progress-adopt-session-tasks")
