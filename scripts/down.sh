#!/usr/bin/env bash
# make down: drain and stop everything make up started; no process of ours is left.
#
#   1. nginx gets SIGQUIT (graceful): it stops accepting and keeps relaying the open sockets;
#   2. every instance (both colours) gets SIGTERM together, so they drain as one fleet: bye,
#      close 1001, registry clean-up; each exits within SHUTDOWN_TIMEOUT (10 s); one still
#      running after DOWN_TIMEOUT (15 s) is killed;
#   3. nginx, its sockets now closed, exits (SIGTERM if it still lingers, then SIGKILL);
#   4. our Prometheus, if make up started one;
#   5. our redis-server last (SIGTERM: it saves its data to $RUN_DIR/redis/), since draining
#      instances still talk to it; with REDIS=sentinel|cluster every process of it, by pid,
#      the Sentinels first (lib-redis-topology.sh). A Redis given by REDIS_URL is left alone.
# Logs and the token stay in $RUN_DIR. RUNTIME=docker: docker compose down instead.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "${RUNTIME:-native}" = docker ]; then exec bash "$ROOT_DIR/scripts/compose.sh" down; fi
# shellcheck source-path=SCRIPTDIR source=lib-fleet.sh
source "$ROOT_DIR/scripts/lib-fleet.sh"
# shellcheck source-path=SCRIPTDIR source=lib-prometheus.sh
source "$ROOT_DIR/scripts/lib-prometheus.sh"

if [ ! -d "$RUN_DIR" ]; then
    say "nothing to stop: $(rel "$RUN_DIR") does not exist"
    exit 0
fi
stopped=0

nginx_pid=""
if nginx_alive; then
    nginx_pid="$(<"$NGINX_PID")"
    step "nginx (pid $nginx_pid): SIGQUIT, it stops accepting and finishes the open sockets"
    kill -QUIT "$nginx_pid" 2>/dev/null || true
fi

# An instance started by the one-instance make up of earlier versions (.run/wsfleet-<n>.pid).
while IFS= read -r legacy; do
    [ -n "$legacy" ] || continue
    if pid_alive "$legacy" "wsfleet"; then
        stop_pid "$legacy" "wsfleet" "$DOWN_TIMEOUT" "wsfleet $(basename "$legacy" .pid)"
        stopped=$((stopped + 1))
    fi
done < <(compgen -G "$RUN_DIR/wsfleet-[0-9]*.pid" || true)

mapfile -t names < <(instances blue; instances green)
if [ "${#names[@]}" -gt 0 ]; then
    stop_instances "${names[@]}"
    stopped=$((stopped + ${#names[@]}))
    say "wsfleet stopped (${names[*]})."
fi

if [ -n "$nginx_pid" ]; then
    nginx_stop 10
    stopped=$((stopped + 1))
    say "nginx stopped."
elif [ -n "$(nginx_orphans)" ]; then
    stop_nginx_orphans
    stopped=$((stopped + 1))
fi

if prometheus_alive; then
    prometheus_stop
    stopped=$((stopped + 1))
    say "prometheus stopped."
fi

if redis_alive; then
    stop_pid "$RUN_DIR/redis.pid" "redis-server" 15 "redis-server"
    stopped=$((stopped + 1))
    say "redis-server stopped."
fi
topology_stop
if [ "$TOPOLOGY_STOPPED" -gt 0 ]; then
    stopped=$((stopped + TOPOLOGY_STOPPED))
    say "our $REDIS stopped ($TOPOLOGY_STOPPED redis-server processes; data in $(rel "$RUN_DIR")/redis-$REDIS/)."
fi
rm -f "$RUN_DIR/color" "$RUN_DIR/scale" "$NGINX_DIR/port" "$NGINX_DIR/address" "$REDIS_TOPOLOGY_FILE"

if [ "$stopped" -eq 0 ]; then
    say "nothing to stop: no wsfleet instance, nginx or redis-server of ours is running."
fi
