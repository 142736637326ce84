#!/usr/bin/env bash
# Starts the scale-out topology on this machine: one redis-server, several uvicorn processes (the
# production server, with deploy/'s flags) and
# Celery workers sharing it and one database. Ctrl-C stops everything this script started.
#   SERVERS=2 WORKERS=2 PORT=8001 REDIS_PORT=6390 scripts/scale_out.sh
#   DATABASE_URL=postgres://user:pass@127.0.0.1/transcribe scripts/scale_out.sh   # PostgreSQL instead of SQLite
#   REDIS_URL=redis://10.0.0.5:6379/0 scripts/scale_out.sh                        # an existing Redis (none started)
#   REDIS_SENTINELS=10.0.0.5:26379,10.0.0.6:26379 REDIS_SENTINEL_MASTER=transcribe scripts/scale_out.sh
#   LOG_FORMAT=json scripts/scale_out.sh                                           # every line JSON
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SECRET_KEY=${SECRET_KEY:-$(bash scripts/secret_key.sh)}  # one key for every process: tokens and sessions
export SECRET_KEY

HOST=${HOST:-127.0.0.1}
SERVERS=${SERVERS:-2}
WORKERS=${WORKERS:-1}
PORT=${PORT:-8001}
REDIS_PORT=${REDIS_PORT:-6390}
export DATA_DIR=${DATA_DIR:-$PWD/var}
LOGS="$DATA_DIR/logs"
mkdir -p "$LOGS"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

if [[ -z "${REDIS_URL:-}" && -z "${REDIS_SENTINELS:-}" ]]; then
  # Append-only file: the job queue lives in Redis, so a Redis restart must not lose queued jobs.
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly yes --dir "$DATA_DIR" \
    >"$LOGS/redis.log" 2>&1 &
  pids+=($!)
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

.venv/bin/python manage.py migrate --noinput -v0

for i in $(seq 0 $((SERVERS - 1))); do
  port=$((PORT + i))
  # The same command as deploy/systemd/transcribe-web@.service; access lines carry no token.
  .venv/bin/uvicorn --host "$HOST" --port "$port" --ws websockets-sansio --ws-max-size 65536 \
    --ws-per-message-deflate false --timeout-graceful-shutdown 15 \
    transcribe_project.asgi:application >"$LOGS/uvicorn-$port.log" 2>&1 &
  pids+=($!)
  echo "server  http://$HOST:$port/  (log $LOGS/uvicorn-$port.log)"
done
for i in $(seq 1 "$WORKERS"); do
  .venv/bin/celery -A transcribe_project worker -l info -n "worker$i@%h" --concurrency "${CONCURRENCY:-1}" \
    >"$LOGS/worker-$i.log" 2>&1 &
  pids+=($!)
  echo "worker  $i  (log $LOGS/worker-$i.log)"
done
echo "redis   ${REDIS_URL:-sentinels $REDIS_SENTINELS}"
echo "Ctrl-C stops them all."
wait -n "${pids[@]}" || true
echo "a process exited; stopping the rest (see $LOGS)" >&2
