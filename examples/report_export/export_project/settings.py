"""Everything a project needs for live progress: the app, Channels, a layer, and its own stages."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_KEY = os.environ["SECRET_KEY"]
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "channels", "progress"]
ROOT_URLCONF = "export_project.urls"
ASGI_APPLICATION = "export_project.asgi.application"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": Path(__file__).parent / "db.sqlite3"}
}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
STATIC_URL = "static/"
PROGRESS = {"STAGES": ["queued", "fetching", "rendering"]}
