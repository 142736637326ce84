#!/usr/bin/env bash
# Runs the tests of the seams with other packages (channel layer, consumer loop, routing) against the
# newest releases of Channels, channels-redis and redis-py on the package index, in .venv-newest; the
# rest of requirements.txt stays pinned. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh  # system packages, and .venv for the pinned run
if [[ ! -x .venv-newest/bin/python ]]; then
  python3 -m venv .venv-newest
fi
.venv-newest/bin/pip install -q --disable-pip-version-check -r requirements.txt
.venv-newest/bin/pip install -q --disable-pip-version-check --upgrade channels channels-redis redis
.venv-newest/bin/python - <<'PY'
from importlib.metadata import version
print("newest:", ", ".join(f"{name} {version(name)}" for name in ("channels", "channels-redis", "redis")))
PY
SECRET_KEY=${SECRET_KEY:-test-$(python3 -c 'import secrets; print(secrets.token_urlsafe(40))')}
export SECRET_KEY
exec .venv-newest/bin/python -m pytest -q -p no:cacheprovider \
  tests/system/test_layers.py tests/system/test_layers_interop.py tests/system/test_redis_layer.py \
  tests/system/test_consumers.py tests/system/test_consumers_hostile.py tests/system/test_inbox.py \
  tests/system/test_sender.py tests/unit/test_routing.py tests/unit/test_timers.py tests/unit/test_watcher.py \
  tests/unit/test_public_apis.py "$@"
