#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: system packages, then .venv.
# Idempotent: skips what is already there. Usage: scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(redis-server flite sox libsox-fmt-mp3 chromium postgresql nginx-light)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian installs redis-server, postgresql and nginx as services; the tests start their own on free
# loopback ports, so the system's are stopped (nginx's would listen on every address).
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now redis-server postgresql nginx >/dev/null 2>&1 || true
fi
# Without systemd, a just-installed nginx may have been started by its package: stop that one.
if [[ " ${missing[*]:-} " == *" nginx-light "* && -s /run/nginx.pid ]]; then
  $SUDO nginx -s quit >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  echo "setup: installing requirements"
  .venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/pip install -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import django, channels, daphne, channels_redis, pydantic, celery, pocketsphinx, prometheus_client" 
  echo "$want" > "$stamp"
fi
