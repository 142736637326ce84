#!/usr/bin/env bash
# Renders deploy/nginx/transcribe.conf for this deployment. Usage:
#   LISTEN=80 SERVERS="127.0.0.1:8001 127.0.0.1:8002" deploy/render.sh > /etc/nginx/conf.d/transcribe.conf
set -euo pipefail
cd "$(dirname "$0")"
upstreams=""
for s in ${SERVERS:-127.0.0.1:8001 127.0.0.1:8002}; do upstreams+="server $s max_fails=1 fail_timeout=5s; "; done
sed -e "s|@UPSTREAMS@|$upstreams|" -e "s|@LISTEN@|${LISTEN:-127.0.0.1:8080}|" \
    -e "s|@BODY_MAX@|${BODY_MAX:-201m}|" -e "s|@READ_TIMEOUT@|${READ_TIMEOUT:-75s}|" \
    -e "s|@ACCESS_LOG@|${ACCESS_LOG:-/var/log/nginx/transcribe.access.log}|" nginx/transcribe.conf
