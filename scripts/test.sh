#!/usr/bin/env bash
# Sets up (first time) and runs the whole test suite: unit tests, real redis-server, real daphne and
# Celery processes. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
