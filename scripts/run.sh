#!/usr/bin/env bash
# Sets up (first time) and runs the service on the embedded default: one daphne process via
# `manage.py runserver`, SQLite in var/, in-memory channel layer, in-process job pool.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A secret key of this machine's own, kept in var/ so sessions and share links survive restarts.
if [[ -z "${SECRET_KEY:-}" ]]; then
  mkdir -p "${DATA_DIR:-var}"
  key_file="${DATA_DIR:-var}/secret_key"
  [[ -s $key_file ]] || (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(50))' > "$key_file")
  SECRET_KEY=$(cat "$key_file")
  export SECRET_KEY
fi
.venv/bin/python manage.py migrate --noinput -v0
exec .venv/bin/python manage.py runserver "${HOST:-127.0.0.1}:${PORT:-8000}"
