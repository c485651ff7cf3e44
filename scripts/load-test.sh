#!/usr/bin/env bash
# make load-test: the closed-loop load tester against the instance make up started.
#
#   PORT=8000  CONNECTIONS=100  MESSAGES=100
# Extra arguments are passed on to wsfleet-loadtest.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -z "${PORT:-}" ] && [ -f "$RUN_DIR/wsfleet-1.port" ]; then
    PORT="$(<"$RUN_DIR/wsfleet-1.port")"
fi
: "${PORT:=8000}"
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
