#!/usr/bin/env bash
# Sets up (first time) and runs the whole test suite: unit tests, real redis-server, real daphne and
# Celery processes. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests run with DEBUG off, as production does: they need a key that is not the built-in one. Server
# processes the tests start inherit it, so tokens minted by a test open their sockets.
SECRET_KEY=${SECRET_KEY:-test-$(python3 -c 'import secrets; print(secrets.token_urlsafe(40))')}
export SECRET_KEY
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
