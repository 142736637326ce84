"""Settings: embedded defaults (SQLite, in-memory layer); the environment switches to scale-out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from progress.conf import from_environ

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / "var"))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _flag(name: str, default: bool) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


DEV_SECRET_KEY = "dev-only-insecure-key-change-me-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", DEV_SECRET_KEY)
DEBUG = _flag("DEBUG", False)
# Anyone who knows the key forges sessions and watch tokens: refuse to serve on the public one.
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY and not _flag("ALLOW_DEV_SECRET_KEY", False):
    raise ImproperlyConfigured(
        "SECRET_KEY is the built-in development key and DEBUG is off: set SECRET_KEY in the environment "
        "(for example: SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')), "
        "or DEBUG=1 on a development machine"
    )
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()
]

INSTALLED_APPS = [
    "transcription",  # first: its runserver (daphne's, with prompt pings) wins over daphne's and Django's
    "daphne",
    "transcribe_project.security.ThrottledAdminConfig",  # django.contrib.admin, logins throttled
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "progress",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "progress.keys.ApiKeyMiddleware",  # Authorization: Bearer <key> acts as the key's user
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",  # X-Frame-Options: DENY on every response
    "transcribe_project.security.content_security_policy",
]
X_FRAME_OPTIONS = "DENY"
ADMIN_LOGIN_FAILURES = int(os.environ.get("ADMIN_LOGIN_FAILURES", 10))
ADMIN_LOGIN_WINDOW = float(os.environ.get("ADMIN_LOGIN_WINDOW", 15 * 60))
"""Failed logins from one address, or for one username, within this many seconds before the admin
refuses further logins from it (429) until the oldest failure is that old."""
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _flag("SECURE_COOKIES", False)
"""Set SECURE_COOKIES=1 behind HTTPS, so the session cookie (which owns tasks) never travels in clear."""

ROOT_URLCONF = "transcribe_project.urls"
ASGI_APPLICATION = "transcribe_project.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def _sqlite_options(db: dict[str, Any]) -> dict[str, Any]:
    # Several processes write one SQLite file: IMMEDIATE takes the write lock at BEGIN, so
    # seq assignment is serialised; WAL lets readers run beside the writer.
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("OPTIONS", {}).update(
            {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            }
        )
        db["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
    return db


_default_db: dict[str, Any] = (
    dict(dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60))
    if os.environ.get("DATABASE_URL")
    else {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DATA_DIR / "db.sqlite3")}
)
DATABASES = {"default": _sqlite_options(_default_db)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PROGRESS = {
    # The audio app's stages (transcription.stages.STAGES): progress itself knows only queued and complete.
    "STAGES": ["uploading", "queued", "transcribing", "aligning", "diarizing"],
    "WEBHOOK_RESULT_PATH": "/api/tasks/{task_id}/result",
    **from_environ(),
}
_CAPACITY = int(PROGRESS.get("CHANNEL_CAPACITY", 1000))

REDIS_URL = os.environ.get("REDIS_URL", "")


def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as (host, port) pairs; anything else is refused, not skipped."""
    addresses = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ImproperlyConfigured(f"REDIS_SENTINELS: {item!r} is not host:port")
        addresses.append((host, int(port)))
    return addresses


REDIS_SENTINELS = sentinel_addresses(os.environ.get("REDIS_SENTINELS", ""))
"""Redis Sentinel addresses ("host:port,host:port"): the layer and the broker follow its master."""
REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER", "mymaster")
if REDIS_SENTINELS and REDIS_URL:
    raise ImproperlyConfigured("set REDIS_URL or REDIS_SENTINELS, not both")
USES_REDIS = bool(REDIS_URL or REDIS_SENTINELS)
"""Whether the channel layer and the job queue live in Redis (else: in memory and in-process threads)."""
# Sentinel answers fast or not at all: a dead sentinel must not hold up asking the next (layer and broker).
_SENTINEL_OPTIONS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
# "pubsub" (RedisPubSubChannelLayer, the default: faster in the bench, drops nothing under load) or "core"
# (RedisChannelLayer: per-channel lists in Redis with a capacity; see docs/performance.md).
REDIS_LAYER = os.environ.get("REDIS_LAYER", "pubsub")
if REDIS_LAYER not in {"core", "pubsub"}:
    raise ValueError(f"REDIS_LAYER={REDIS_LAYER!r} must be 'core' or 'pubsub'")
if USES_REDIS:
    # redis-py's defaults (100 connections, failing at once; a 5 s socket timeout equal to the
    # layer's 5 s blocking read) broke handshakes and idle sockets under load.
    _host: dict[str, Any] = {
        "max_connections": 4096,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "health_check_interval": 15,
    }
    if REDIS_SENTINELS:
        _host.update(
            sentinels=REDIS_SENTINELS, master_name=REDIS_SENTINEL_MASTER, sentinel_kwargs=_SENTINEL_OPTIONS
        )
    else:
        _host["address"] = REDIS_URL
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [_host], "capacity": _CAPACITY},
        }
    }
    if REDIS_LAYER == "pubsub":
        _layer: dict[str, Any] = CHANNEL_LAYERS["default"]
        _layer["BACKEND"] = "progress.layers.PubSubChannelLayer"  # RedisPubSubChannelLayer, lighter
        del _layer["CONFIG"]["capacity"]  # pub/sub queues in-process, unbounded
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": _CAPACITY}}
    }

# Uploads stream to temporary files under MEDIA_ROOT (never whole into memory), then move into it.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))
FILE_UPLOAD_TEMP_DIR = MEDIA_ROOT / "tmp"
FILE_UPLOAD_TEMP_DIR.mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.TemporaryFileUploadHandler"]
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # also what Django's ASGI handler keeps of a body in memory
TRANSCRIPTION_MAX_UPLOAD_BYTES = int(os.environ.get("TRANSCRIPTION_MAX_UPLOAD_BYTES", 1024**3))
"""Largest upload accepted (cap bodies at the proxy too: daphne receives a whole body first)."""
TRANSCRIPTION_MAX_AUDIO_SECONDS = float(os.environ.get("TRANSCRIPTION_MAX_AUDIO_SECONDS", 4 * 3600))
"""Longest audio accepted, checked before a job runs (audio_too_long)."""
TRANSCRIPTION_UPLOAD_IDLE_TIMEOUT = float(os.environ.get("TRANSCRIPTION_UPLOAD_IDLE_TIMEOUT", 30))
"""Seconds an upload body may send nothing before it is dropped (408 upload_timeout)."""
TRANSCRIPTION_MAX_ATTEMPTS = int(os.environ.get("TRANSCRIPTION_MAX_ATTEMPTS", 3))
"""Times one task may run: the first attempt and its retries."""
TRANSCRIPTION_KEEP_FAILED_AUDIO = float(os.environ.get("TRANSCRIPTION_KEEP_FAILED_AUDIO", 24 * 3600))
"""Seconds a failed task's audio is kept for a retry (less if no retry can use it)."""
TRANSCRIPTION_UPLOADS_PER_MINUTE = int(os.environ.get("TRANSCRIPTION_UPLOADS_PER_MINUTE", 20))
"""New uploads one owner, and one client address, may start in any minute (429 and Retry-After past it)."""
TRANSCRIPTION_MAX_OWNER_BYTES = int(os.environ.get("TRANSCRIPTION_MAX_OWNER_BYTES", 2 * 1024**3))
"""Bytes of audio one owner may have stored at once (files waiting for or in a job); 429 past it."""
TRANSCRIPTION_MAX_BYTES_PER_DAY = int(os.environ.get("TRANSCRIPTION_MAX_BYTES_PER_DAY", 20 * 1024**3))
TRANSCRIPTION_UPLOAD_CHUNK_BYTES = int(os.environ.get("TRANSCRIPTION_UPLOAD_CHUNK_BYTES", 8 * 1024**2))
"""The most one request of a resumable upload (a tus PATCH) may carry: under any proxy's body cap."""
TRANSCRIPTION_UPLOAD_EXPIRY = float(os.environ.get("TRANSCRIPTION_UPLOAD_EXPIRY", 24 * 3600))
"""Seconds an unfinished resumable upload is kept; then its bytes are deleted and its task fails."""
"""Bytes of audio one owner (a user, through any key or browser) may upload in any 24 hours; 429 past it."""
TRANSCRIPTION_RESERVATION_TTL = float(os.environ.get("TRANSCRIPTION_RESERVATION_TTL", 3600))
"""Seconds a reserved task waits for its upload; then it fails (upload_expired) and stops counting."""
TRANSCRIPTION_KEEP_RESULTS = float(os.environ.get("TRANSCRIPTION_KEEP_RESULTS", 30 * 24 * 3600))
"""Seconds a finished, failed or cancelled task is kept (transcript, history); then it is deleted. 0: kept."""
TRANSCRIPTION_WORKERS = int(os.environ.get("TRANSCRIPTION_WORKERS", "2"))
"""Jobs run at once by the in-process pool (embedded default, no REDIS_URL)."""
TRANSCRIPTION_ENGINE = os.environ.get("TRANSCRIPTION_ENGINE", "transcription.engines.PocketSphinxEngine")
"""Dotted path of the recogniser (a transcription.engines.Engine subclass)."""
TRANSCRIPTION_DIARIZER = os.environ.get(
    "TRANSCRIPTION_DIARIZER", "transcription.engines.SingleSpeakerDiarizer"
)
"""Dotted path of the diarizer; the default labels everything SPEAKER_1 (no real diarization)."""

# Celery (jobs on Redis when REDIS_URL is set): a job is acknowledged only when it ends, and a job
# whose worker process died goes back to the queue; the job's claim makes a redelivery harmless.
CELERY_BROKER_URL = REDIS_URL or ";".join(f"sentinel://{h}:{p}" for h, p in REDIS_SENTINELS)
if REDIS_SENTINELS:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "master_name": REDIS_SENTINEL_MASTER,
        "sentinel_kwargs": _SENTINEL_OPTIONS,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 5
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", DATA_DIR / "static"))
"""Where ``manage.py collectstatic`` puts hashed, compressed copies; WhiteNoise serves them."""
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "transcribe_project.storage.StaticStorage"},
}
WHITENOISE_USE_FINDERS = True  # before collectstatic, serve straight from the apps
WHITENOISE_AUTOREFRESH = DEBUG

LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain")
"""plain (readable, for runserver) or json (one object per line, for a log pipeline)."""
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} must be 'plain' or 'json'")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "progress.logs.JsonFormatter"},
    },
    # Our own lines never quote a token either, whatever logger they come from.
    "filters": {"redact": {"()": "progress.logs.RedactSecrets"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["redact"]}
    },
    "loggers": {
        # Not propagated: a server that logs through the root logger (daphne) would print each line twice.
        "progress": {
            "handlers": ["console"],
            "level": os.environ.get("PROGRESS_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        "transcription": {
            "handlers": ["console"],
            "level": os.environ.get("PROGRESS_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        # uvicorn's own lines too, so that with LOG_FORMAT=json every line of a server's output is JSON.
        **{
            name: {"handlers": ["console"], "level": "INFO", "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            if LOG_FORMAT == "json"
        },
    },
    # And every other library's (daphne's and runserver's among them): the root logger's handler,
    # which replaces the one daphne's command line set up before loading this.
    **({"root": {"handlers": ["console"], "level": "INFO"}} if LOG_FORMAT == "json" else {}),
}
