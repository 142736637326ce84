#!/usr/bin/env bash
# Renders deploy/nginx/transcribe.conf for this deployment. Usage:
#   LISTEN=80 SERVERS="127.0.0.1:8001 127.0.0.1:8002" deploy/render.sh > /etc/nginx/conf.d/transcribe.conf
#   ROUTING=spread deploy/render.sh ...   # sockets balanced one by one instead of by task
set -euo pipefail
cd "$(dirname "$0")"
upstreams=""
for s in ${SERVERS:-127.0.0.1:8001 127.0.0.1:8002}; do upstreams+="server $s max_fails=1 fail_timeout=5s; "; done
# ROUTING=task (default): a task's watchers share one process; spread: each socket to the least busy.
case ${ROUTING:-task} in
  task) balance='hash $transcribe_task consistent;' ;;
  spread) balance='least_conn;' ;;
  *) echo "ROUTING must be task or spread" >&2; exit 2 ;;
esac
sed -e "s|@UPSTREAMS@|$upstreams|" -e "s|@SOCKET_BALANCE@|$balance|" -e "s|@LISTEN@|${LISTEN:-127.0.0.1:8080}|" \
    -e "s|@BODY_MAX@|${BODY_MAX:-201m}|" -e "s|@READ_TIMEOUT@|${READ_TIMEOUT:-75s}|" \
    -e "s|@ACCESS_LOG@|${ACCESS_LOG:-/var/log/nginx/transcribe.access.log}|" nginx/transcribe.conf
