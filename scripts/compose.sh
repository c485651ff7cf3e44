#!/usr/bin/env bash
# The fleet with docker compose (make up|scale|promote|down|status|logs RUNTIME=docker), on one
# Docker host, from compose/compose.yaml. The same contract as the native scripts:
#   up       redis, N (2) app_blue replicas, nginx on :PORT (8080), prometheus, grafana
#   scale    the live colour to N replicas; nginx re-renders its template and reloads
#   promote  build the other colour's image, start N replicas, smoke-test each inside its
#            container (wsfleet-loadtest smoke, through a private room: nothing reaches
#            real users), switch nginx (graceful reload), then stop the
#            old colour (SIGTERM: drain; compose waits up to stop_grace_period); on a failure
#            the new colour is removed and nginx is not touched
#   down     docker compose down (instances drain on SIGTERM); Redis's volume is kept
# Run state (token, live colour, N, PORT) in $RUN_DIR/compose.env, mode 600.
#
# NOTE: no Docker engine runs on the machines this project is developed and tested on; this
# script passes shellcheck, but it has not been run against a Docker engine.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-}"
ENV_FILE="$RUN_DIR/compose.env"
COMPOSE_FILE="$ROOT_DIR/compose/compose.yaml"
: "${READY_TIMEOUT:=120}"

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p wsfleet -f "$COMPOSE_FILE" --env-file "$ENV_FILE" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose -p wsfleet -f "$COMPOSE_FILE" --env-file "$ENV_FILE" "$@"
    else
        die "docker compose not found: install the docker-compose-plugin package (Docker's apt repository), then run this again"
    fi
}

# setting NAME DEFAULT: NAME's value in the env file, else DEFAULT.
setting() {
    local v
    v="$(sed -n "s/^$1=//p" "$ENV_FILE" 2>/dev/null | tail -n 1)"
    printf '%s' "${v:-$2}"
}

# write_env TOKEN COLOUR N PORT
write_env() {
    mkdir -p "$RUN_DIR"
    chmod 700 "$RUN_DIR"
    (umask 077 && printf 'BROADCAST_TOKEN=%s\nLIVE_COLOR=%s\nN=%s\nPORT=%s\n' "$@" >"$ENV_FILE")
}

other() { if [ "$1" = blue ]; then echo green; else echo blue; fi; }

# healthy SERVICE COUNT: COUNT containers of SERVICE run and report healthy.
healthy() {
    local ids id n=0
    mapfile -t ids < <(compose ps -q "$1")
    for id in "${ids[@]}"; do
        if [ "$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null)" = healthy ]; then
            n=$((n + 1))
        fi
    done
    [ "$n" -ge "$2" ]
}

# nginx_switch COLOUR: re-render the template inside the nginx container with COLOUR as the
# upstream (Docker's DNS resolves app_COLOUR to every replica) and reload gracefully.
nginx_switch() {
    # shellcheck disable=SC2016 # expanded by the container's shell, not here
    compose exec -T -e "WSFLEET_UPSTREAM_SERVERS=server app_$1:8000;" \
        -e "WSFLEET_CONFIG_ID=compose-$1-$(date +%s)" nginx sh -ec '
        vars=$(env | sed -n "s/^\(WSFLEET_[A-Z_]*\)=.*/\${\1}/p" | tr "\n" " ")
        envsubst "$vars" </etc/nginx/templates/default.conf.template >/etc/nginx/conf.d/default.conf.new
        mv /etc/nginx/conf.d/default.conf.new /etc/nginx/conf.d/default.conf
        nginx -t -q && nginx -s reload'
}

up() {
    local token color n port
    token="$(setting BROADCAST_TOKEN "")"
    [ -n "$token" ] || token="${BROADCAST_TOKEN:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}"
    color="$(setting LIVE_COLOR blue)"
    n="${N:-$(setting N 2)}"
    port="${PORT:-$(setting PORT 8080)}"
    write_env "$token" "$color" "$n" "$port"
    step "docker compose: building the image, starting redis and $n x app_$color"
    compose build "app_$color"
    compose up -d --scale "app_$color=$n" --scale "app_$(other "$color")=0" redis "app_$color"
    wait_until "$READY_TIMEOUT" "app_$color x$n to be healthy" healthy "app_$color" "$n" ||
        die "app_$color did not become healthy: docker compose -p wsfleet -f compose/compose.yaml logs app_$color"
    compose up -d --no-deps nginx prometheus grafana
    through_nginx() { curl -fsS -o /dev/null -m 2 "http://127.0.0.1:$port/readyz" 2>/dev/null; }
    wait_until "$READY_TIMEOUT" "nginx on :$port" through_nginx ||
        die "nginx on :$port does not reach a ready instance"
    cat <<SUMMARY

  URL        http://127.0.0.1:$port/   test page http://127.0.0.1:$port/test/
  token      $token   (in $ENV_FILE, mode 600)
  broadcast  docker compose -p wsfleet -f compose/compose.yaml exec app_$color curl -sS -X POST http://127.0.0.1:8000/broadcast -H 'Authorization: Bearer $token' -H 'Content-Type: application/json' -d '{"message":"hello"}'
  prometheus http://127.0.0.1:9090/   grafana http://127.0.0.1:3000/
SUMMARY
}

scale() {
    local color old
    [ -s "$ENV_FILE" ] || die "the docker fleet is not up: make up RUNTIME=docker"
    if ! [[ "${N:-}" =~ ^[1-9][0-9]*$ ]]; then die "say how many instances: make scale N=4 RUNTIME=docker"; fi
    color="$(setting LIVE_COLOR blue)"
    old="$(setting N 2)"
    if [ "$N" -lt "$old" ]; then
        # compose stops the highest-numbered replicas (SIGTERM: they drain at once). nginx
        # is re-rendered right after; a draining replica answers new upgrades 503 and nginx
        # passes them to the next one (proxy_next_upstream).
        compose up -d --no-deps --no-recreate --scale "app_$color=$N" "app_$color"
        nginx_switch "$color"
    else
        compose up -d --no-deps --no-recreate --scale "app_$color=$N" "app_$color"
        wait_until "$READY_TIMEOUT" "app_$color x$N to be healthy" healthy "app_$color" "$N" ||
            die "the new replicas did not become healthy"
        nginx_switch "$color"
    fi
    write_env "$(setting BROADCAST_TOKEN "")" "$color" "$N" "$(setting PORT 8080)"
    say "app_$color scaled from $old to $N."
}

promote() {
    local began=$SECONDS old new n token i
    [ -s "$ENV_FILE" ] || die "the docker fleet is not up: make up RUNTIME=docker"
    old="$(setting LIVE_COLOR blue)"
    new="$(other "$old")"
    n="$(setting N 2)"
    token="$(setting BROADCAST_TOKEN "")"
    rollback() {
        compose up -d --no-deps --scale "app_$new=0" "app_$new" || true
        die "promote FAILED: $1; rolled back: app_$new removed, traffic stays on app_$old"
    }
    step "promote: building app_$new and starting $n replica(s)"
    compose build "app_$new"
    compose up -d --no-deps --scale "app_$new=$n" "app_$new"
    wait_until "$READY_TIMEOUT" "app_$new to be healthy" healthy "app_$new" "$n" ||
        rollback "app_$new did not become healthy"
    for ((i = 1; i <= n; i++)); do
        compose exec -T --index "$i" -e "LOADTEST_TOKEN=$token" "app_$new" wsfleet-loadtest smoke \
            --url ws://127.0.0.1:8000/ws/chat/ --http http://127.0.0.1:8000 ||
            rollback "the smoke test of app_$new #$i failed"
    done
    nginx_switch "$new" || rollback "nginx did not take the new upstream"
    write_env "$token" "$new" "$n" "$(setting PORT 8080)"
    step "stopping app_$old (SIGTERM: drain, bye, close 1001)"
    compose stop "app_$old"
    compose up -d --no-deps --scale "app_$old=0" "app_$old"
    say "promoted app_$old -> app_$new, $n instance(s), in $((SECONDS - began))s"
}

# Fail before touching anything when there is no compose to drive.
case "$ACTION" in up | scale | promote | down | status | logs) compose version >/dev/null ;; esac

case "$ACTION" in
up) up ;;
scale) scale ;;
promote) promote ;;
down)
    [ -s "$ENV_FILE" ] || write_env unused blue 0 "${PORT:-8080}"
    compose down
    ;;
status) compose ps ;;
logs) compose logs -f --tail 50 ;;
*) die "usage: scripts/compose.sh up|scale|promote|down|status|logs" ;;
esac
