#!/usr/bin/env bash
# make load-test: the closed-loop load tester against the fleet make up started, through nginx.
#
#   CONNECTIONS=5000  MESSAGES=20     sockets, and counted messages each sends
#   SCENARIO=closed-loop              or open-loop, hold, … (any wsfleet-loadtest scenario)
#   PORT=8080                         nginx's port (default: the one make up used)
#   SOURCE_IPS=127.0.0.1,…            client addresses (default: as many of 127.0.0.N as keep
#                                     each under nginx's per-address limits, see below)
# Extra arguments are passed on to wsfleet-loadtest (make load-test ARGS="--json r.json").
# A fleet that make up started with AUTH_SECRET gets a token per socket (--auth-secret, from
# $RUN_DIR/auth_secret unless LOADTEST_AUTH_SECRET is set).
#
# nginx limits each client address (NGINX_LIMIT_CONN=1000 connections, NGINX_LIMIT_RATE=200
# upgrades/s after a burst of NGINX_LIMIT_BURST=400), like a real front end. 5000 sockets from
# one address would hit those limits, so the sockets are spread over several loopback source
# addresses (--source-ips): at most 200 per address, half the burst. A load tester without
# --source-ips runs from one address: then CONNECTIONS defaults to 200, and a larger CONNECTIONS
# needs a fleet started with higher limits (make up NGINX_LIMIT_CONN=… NGINX_LIMIT_BURST=…).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -z "${PORT:-}" ]; then PORT="$(cat "$RUN_DIR/nginx/port" 2>/dev/null || echo 8080)"; fi
: "${MESSAGES:=20}"
: "${SCENARIO:=closed-loop}"
: "${NGINX_LIMIT_BURST:=400}"
# Half the burst per address: a run right after another still fits while nginx's bucket refills
# (at NGINX_LIMIT_RATE per second).
PER_ADDRESS=$((NGINX_LIMIT_BURST / 2))

need_cargo
need_tool curl curl
curl -fsS -o /dev/null -m 5 "http://127.0.0.1:$PORT/readyz" 2>/dev/null ||
    die "http://127.0.0.1:$PORT/readyz is not 200: start the server first (make up)"
build_release wsfleet-loadtest >/dev/null

source_args=()
if "$LOADTEST_BIN" "$SCENARIO" --help 2>/dev/null | grep -q -- '--source-ips'; then
    : "${CONNECTIONS:=5000}"
    if [ -z "${SOURCE_IPS:-}" ]; then
        addresses=$(((CONNECTIONS + PER_ADDRESS - 1) / PER_ADDRESS))
        [ "$addresses" -le 250 ] || die "CONNECTIONS=$CONNECTIONS needs more than 250 source addresses at $PER_ADDRESS each"
        SOURCE_IPS="$(seq -f '127.0.0.%g' 1 "$addresses" | paste -sd, -)"
    fi
    source_args=(--source-ips "$SOURCE_IPS")
    say "sockets spread over source addresses $SOURCE_IPS (nginx allows $PER_ADDRESS new sockets per address at once)"
else
    if [ -z "${CONNECTIONS:-}" ]; then
        CONNECTIONS=$PER_ADDRESS
        say "note: this wsfleet-loadtest lacks --source-ips, so all sockets come from one address, and nginx" \
            "accepts only a burst of $NGINX_LIMIT_BURST upgrades from one address: running $CONNECTIONS sockets instead of 5000."
    elif [ "$CONNECTIONS" -gt "$PER_ADDRESS" ]; then
        say "note: this wsfleet-loadtest lacks --source-ips: $CONNECTIONS sockets from one address exceed nginx's" \
            "per-address limits (a burst of $NGINX_LIMIT_BURST upgrades, 1000 at once) unless make up raised them; expect 429s."
    fi
fi

if [ -z "${LOADTEST_AUTH_SECRET:-}" ] && [ -s "$RUN_DIR/auth_secret" ]; then
    LOADTEST_AUTH_SECRET="$(<"$RUN_DIR/auth_secret")"
    export LOADTEST_AUTH_SECRET
    say "the fleet has authentication on: each socket signs its own token"
fi

step "wsfleet-loadtest $SCENARIO: $CONNECTIONS connections against 127.0.0.1:$PORT (nginx)"
extra=()
case "$SCENARIO" in
closed-loop | resume) extra=(--messages "$MESSAGES") ;;
esac
exec "$LOADTEST_BIN" "$SCENARIO" \
    --url "ws://127.0.0.1:$PORT/ws/chat/" \
    --connections "$CONNECTIONS" \
    "${extra[@]}" "${source_args[@]}" \
    "$@"
