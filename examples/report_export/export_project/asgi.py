"""Django's HTTP and the task sockets in one ASGI application."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "export_project.settings")
django_app = get_asgi_application()

import progress.asgi  # noqa: E402  (after Django is set up)

application = progress.asgi.application(django_app)
