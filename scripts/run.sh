#!/usr/bin/env bash
# Sets up (first time) and runs the service on the embedded default: one daphne process via
# `manage.py runserver`, SQLite in var/, in-memory channel layer, in-process job pool.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SECRET_KEY=${SECRET_KEY:-$(bash scripts/secret_key.sh)}  # DEBUG stays off: set DEBUG=1 for tracebacks
export SECRET_KEY
.venv/bin/python manage.py migrate --noinput -v0
exec .venv/bin/python manage.py runserver "${HOST:-127.0.0.1}:${PORT:-8000}"
