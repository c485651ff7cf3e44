#!/usr/bin/env bash
# make status: one line per instance we started (colour, instance id, port, pid, ready, local
# connections), nginx and Redis (with REDIS=sentinel|cluster: which, whether it is healthy and why
# not, and one line per process with its role), then the fleet as the registry sees it (GET /status, read with
# jq), then the fleet's health. STATUS_JSON=1: the raw GET /status of the fleet (from the first
# instance of ours that answers on its loopback port: /status is not on nginx's public listener).
# RUNTIME=docker: docker compose ps instead.
#
# A health check: exit 0 when GET /readyz through nginx (http://127.0.0.1:PORT/readyz) answers
# 200, that is nginx answers and reaches at least one ready instance (ready: it has Redis and
# its pub/sub, and is not draining), so a client on :PORT is served; exit 1 otherwise (nginx
# not running or not answering, or no ready instance behind it), with the reason on the last
# line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "${RUNTIME:-native}" = docker ]; then exec bash "$ROOT_DIR/scripts/compose.sh" status; fi
# shellcheck source-path=SCRIPTDIR source=lib-fleet.sh
source "$ROOT_DIR/scripts/lib-fleet.sh"

need_tool curl curl
ensure_package jq jq
if [ "${STATUS_JSON:-0}" = 1 ]; then
    # /status is not on nginx's public listener: ask our instances on their loopback ports.
    for name in $(instances "$(live_color)") $(instances "$(other_color "$(live_color)")"); do
        if body="$(curl -fsS -m 5 "http://127.0.0.1:$(instance_port "$name")/status" 2>/dev/null)"; then
            printf '%s\n' "$body" | show_json
            exit 0
        fi
    done
    die "no instance of ours answers GET /status: is the fleet up? (make up)"
fi
LIVE="$(live_color)"
mapfile -t names < <(instances "$LIVE"; instances "$(other_color "$LIVE")")
mapfile -t upstream < <(upstream_names)

fmt='%-6s %-6s %-18s %-6s %-8s %-6s %-6s %s\n'
# shellcheck disable=SC2059 # the format is ours
printf "$fmt" COLOUR ROLE INSTANCE PORT PID READY CONNS NGINX
status_body=""
for name in "${names[@]}"; do
    port="$(instance_port "$name")"
    code="$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$port/readyz" 2>/dev/null || true)"
    body="$(curl -fsS -m 2 "http://127.0.0.1:$port/status" 2>/dev/null || true)"
    [ -n "$status_body" ] || status_body=$body
    role=live
    [ "${name%-*}" = "$LIVE" ] || role=other
    in_nginx=no
    [[ " ${upstream[*]} " == *" $name "* ]] && in_nginx=upstream
    ready=no
    [ "$code" = 200 ] && ready=yes
    # shellcheck disable=SC2059
    printf "$fmt" "${name%-*}" "$role" "$(instance_id "$name")" "$port" "$(instance_pid "$name")" \
        "$ready" "$(json_number "$body" .connections.local)" "$in_nginx"
done
[ "${#names[@]}" -gt 0 ] || say "(no wsfleet instance of ours is running)"

echo
if nginx_alive; then
    say "nginx   pid $(<"$NGINX_PID"), http://127.0.0.1:$PORT/ -> ${upstream[*]:-nothing}"
else
    say "nginx   not running"
fi
if [ "$REDIS" != single ] && [ -s "$REDIS_TOPOLOGY_FILE" ]; then
    # Several processes of ours: the topology's health, then one line each.
    topology_healthy || true
    say "redis   $REDIS, $TOPOLOGY_HEALTH"
    say "        $(cat "$RUN_DIR/redis_url" 2>/dev/null)"
    topology_lines
elif redis_alive; then
    say "redis   pid $(<"$RUN_DIR/redis.pid"), $(cat "$RUN_DIR/redis_url" 2>/dev/null)"
elif [ -s "$RUN_DIR/redis_url" ] && [ ! -f "$RUN_DIR/redis.port" ]; then
    say "redis   $(<"$RUN_DIR/redis_url") (not ours)"
else
    say "redis   not running"
fi

echo
if [ -z "$status_body" ]; then
    say "fleet   unknown: no instance answers GET /status"
else
    # The registry's view: every live instance of the fleet, whoever started it.
    # shellcheck disable=SC2016 # a jq program, not a shell expansion
    fleet="$(jq -r --arg live "$LIVE" '
        [.instances[]?] as $all
        | "\($all | length) instance(s) in the registry (blue \([$all[] | select(.color == "blue")] | length), green \([$all[] | select(.color == "green")] | length), draining \([$all[] | select(.draining)] | length)), \(.connections.fleet // 0) connection(s); live colour: \($live)"
    ' <<<"$status_body" 2>/dev/null)" || fleet="unknown: GET /status did not answer JSON"
    say "fleet   $fleet"
fi

# The health rule (above): /readyz through nginx.
code="$(curl -s -o /dev/null -w '%{http_code}' -m 3 "http://127.0.0.1:$PORT/readyz" 2>/dev/null || true)"
if [ "$code" = 200 ]; then
    say "health  ok: http://127.0.0.1:$PORT/readyz answers 200 (nginx reaches a ready instance)"
    exit 0
elif ! nginx_alive; then
    say "health  DOWN: no nginx of ours is running (make up starts the fleet)"
elif [ -z "$code" ] || [ "$code" = 000 ]; then
    say "health  DOWN: nginx does not answer on :$PORT"
else
    say "health  DOWN: http://127.0.0.1:$PORT/readyz answers $code: no ready instance behind nginx (see make logs)"
fi
exit 1
