"""Django app configuration for progress."""

from __future__ import annotations

from django.apps import AppConfig


class ProgressConfig(AppConfig):
    """Connects the settings cache to Django's setting_changed signal."""

    name = "progress"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Forget cached PROGRESS settings when tests override them."""
        from django.test.signals import setting_changed

        from .conf import _reset

        setting_changed.connect(_reset)
