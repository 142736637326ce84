#!/usr/bin/env bash
# Prints this machine's secret key, made once and kept in $DATA_DIR/secret_key (mode 600), so sessions
# and share links survive restarts. Usage: SECRET_KEY=${SECRET_KEY:-$(bash scripts/secret_key.sh)}
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${DATA_DIR:-var}
mkdir -p "$dir"
key_file="$dir/secret_key"
[[ -s $key_file ]] || (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(50))' >"$key_file")
cat "$key_file"
