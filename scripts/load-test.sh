#!/usr/bin/env bash
# make load-test: the closed-loop load tester against the fleet make up started, through nginx.
#
#   PORT=8080 (nginx's port; the one make up used by default)  CONNECTIONS=100  MESSAGES=100
# nginx limits each client address (NGINX_LIMIT_CONN=1000 connections, NGINX_LIMIT_RATE=200
# upgrades/s with a burst of 400): for more, raise those at make up, or aim PORT at one
# instance's loopback port (make status lists them).
# Extra arguments are passed on to wsfleet-loadtest.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -z "${PORT:-}" ]; then PORT="$(cat "$RUN_DIR/nginx/port" 2>/dev/null || echo 8080)"; fi
: "${CONNECTIONS:=100}"
: "${MESSAGES:=100}"

need_cargo
need_tool curl curl
curl -fsS -o /dev/null -m 5 "http://127.0.0.1:$PORT/readyz" 2>/dev/null ||
    die "http://127.0.0.1:$PORT/readyz is not 200: start the server first (make up)"

step "wsfleet-loadtest closed-loop: $CONNECTIONS connections x $MESSAGES messages against 127.0.0.1:$PORT"
exec cargo run --release -q -p wsfleet-loadtest -- closed-loop \
    --url "ws://127.0.0.1:$PORT/ws/chat/" \
    --connections "$CONNECTIONS" \
    --messages "$MESSAGES" \
    "$@"
