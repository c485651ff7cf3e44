#!/usr/bin/env bash
# make up: the whole fleet on this machine, ready when this returns: Redis, N instances of the
# live colour (blue on a fresh start) on loopback ports, and our own nginx on :PORT in front.
#
#   N=2                  instances of the live colour
#   PORT=8080            nginx's public port; BASE_PORT=8001: the instances' first port
#   REDIS_PORT=6379      our redis-server; REDIS_URL= an existing Redis instead (none started)
#   REDIS=single         our Redis: one redis-server; REDIS=sentinel: a primary, a replica and
#                        three Sentinels; REDIS=cluster: a 3-primary cluster with a replica each
#                        (scripts/lib-redis-topology.sh; ports from REDIS_PORT up)
#   REDIS_MAXMEMORY=256mb  our redis-server's memory bound (append-only file and eviction
#                        policy: scripts/lib-redis.sh)
#   BROADCAST_TOKEN=     the operator token (default: generated once, kept in $RUN_DIR/token)
#   AUTH_SECRET=         turns authentication on: every socket needs an HS256 token signed with
#                        it (kept in $RUN_DIR/auth_secret for make scale/promote/load-test;
#                        AUTH_SECRET= (empty) turns it off again; unset: as the last make up)
#   SKIP_BUILD=1         do not run cargo; use WSFLEET_BIN (default target/release/wsfleet)
#   RUNTIME=docker       the same with docker compose (scripts/compose.sh)
#   PROMETHEUS=auto|1|0  our own Prometheus on :9090 when installed / installing it / never
#                        (scripts/lib-prometheus.sh)
# More settings in lib-fleet.sh. Running it again when the fleet is up says so and changes
# nothing; when part of it has died (a stale pid), it starts what is missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "${RUNTIME:-native}" = docker ]; then
    [ "${REDIS:-single}" = single ] || die "REDIS=$REDIS is for the fleet on this machine, not RUNTIME=docker (compose runs one Redis)"
    exec bash "$ROOT_DIR/scripts/compose.sh" up
fi
# shellcheck source-path=SCRIPTDIR source=lib-fleet.sh
source "$ROOT_DIR/scripts/lib-fleet.sh"
# shellcheck source-path=SCRIPTDIR source=lib-prometheus.sh
source "$ROOT_DIR/scripts/lib-prometheus.sh"

check_port PORT "$PORT"
check_port REDIS_PORT "$REDIS_PORT"
check_port BASE_PORT "$BASE_PORT"
[ -n "$REDIS_URL" ] || check_redis_maxmemory
check_redis_topology
if [ -n "$REDIS_URL" ] && [ "$REDIS" != single ]; then
    die "REDIS=$REDIS starts our own Redis, REDIS_URL names another: give one of them"
fi
running_topology="$(cat "$REDIS_TOPOLOGY_FILE" 2>/dev/null || true)"
if [ -n "$running_topology" ] && [ "$running_topology" != "$REDIS" ] &&
    { redis_alive 2>/dev/null || [ "$(REDIS=$running_topology topology_missing 2>/dev/null | wc -l)" -lt "$(topology_names "$running_topology" | wc -l)" ]; }; then
    die "our Redis runs as $running_topology, not $REDIS: make down first (its data stays in $(rel "$RUN_DIR"))"
fi
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"

COLOR="$(live_color)"
# N: given, else the size the fleet had (make scale), else 2.
N_GIVEN=${N:-}
if [ -z "${N:-}" ]; then N="$(cat "$RUN_DIR/scale" 2>/dev/null || echo 2)"; fi
check_count "$N"

summary() {
    local names=() name ports=()
    mapfile -t names < <(instances "$COLOR")
    for name in "${names[@]}"; do ports+=("127.0.0.1:$(instance_port "$name")"); done
    cat <<EOF

  URL        http://127.0.0.1:$PORT/
  test page  http://127.0.0.1:$PORT/test/
  socket     ws://127.0.0.1:$PORT/ws/chat/?session_uuid=<your-id>
  instances  $COLOR x${#names[@]}: ${ports[*]}
  redis      $(cat "$RUN_DIR/redis_url" 2>/dev/null || echo '?')$(redis_kind)
  token      $(<"$TOKEN_FILE")   (in $(rel "$TOKEN_FILE"), mode 600)
  auth       $(auth_line)
  broadcast  $(broadcast_line "$(instance_port "${names[0]}")")
             (/broadcast and /metrics are on the instances' loopback ports only, not on :$PORT)
$(prometheus_line)

  make status | make scale N=4 | make promote | make logs | make monitor | make down
EOF
}

# redis_kind: what our Redis is, when it is more than one redis-server.
redis_kind() {
    if [ -z "$REDIS_URL" ] && [ "$REDIS" != single ]; then
        printf '\n             (%s of ours: %s processes, their logs in %s/redis-*.log)' "$REDIS" "$(topology_names "$REDIS" | wc -l)" "$(rel "$RUN_DIR")"
    fi
}

auth_line() {
    if [ -s "$AUTH_SECRET_FILE" ]; then
        printf '%s\n' "on (HS256, secret in $(rel "$AUTH_SECRET_FILE")); a token for alice, valid 1h:" \
            "             LOADTEST_AUTH_SECRET=\"\$(cat $(rel "$AUTH_SECRET_FILE"))\" target/release/wsfleet-loadtest token --sub alice --ttl 1h" \
            "             then ws://127.0.0.1:$PORT/ws/chat/?token=<token> (make load-test signs its own)"
    else
        echo "off (development: any client may use any session; AUTH_SECRET=… make up turns it on)"
    fi
}

# --- already up? --------------------------------------------------------------------------
mapfile -t running < <(instances "$COLOR")
redis_died=0
if [ -z "$REDIS_URL" ] && [ "${#running[@]}" -gt 0 ] && [ -s "$RUN_DIR/redis.port" ] &&
    [ "$(cat "$RUN_DIR/redis_url" 2>/dev/null)" = "redis://127.0.0.1:$(<"$RUN_DIR/redis.port")" ] &&
    ! redis_alive; then
    # Our redis-server died under running instances (killed, crashed): it is started again
    # below, on the port they were given; its append-only file brings the counters back.
    REDIS_PORT="$(<"$RUN_DIR/redis.port")"
    redis_died=1
    say "note: our redis-server (port $REDIS_PORT) is not running; starting it again"
elif [ -z "$REDIS_URL" ] && [ "$REDIS" != single ] && [ "${#running[@]}" -gt 0 ]; then
    mapfile -t redis_missing < <(topology_missing 2>/dev/null)
    if [ "${#redis_missing[@]}" -gt 0 ]; then
        # Killed or crashed: started again from their own configuration files and data.
        redis_died=1
        say "note: part of our $REDIS is not running (${redis_missing[*]}); starting it again"
    fi
fi
if nginx_alive && [ "${#running[@]}" -gt 0 ] && [ "$redis_died" = 0 ]; then
    say "the fleet is already up: nginx (pid $(<"$NGINX_PID")) on :$(<"$NGINX_DIR/port"), $COLOR x${#running[@]}; make down stops it."
    if [ "$(<"$NGINX_DIR/port")" != "$PORT" ]; then
        say "note: nginx listens on $(<"$NGINX_DIR/port"), not PORT=$PORT; make down first to move it."
        PORT="$(<"$NGINX_DIR/port")"
    fi
    if [ -n "$N_GIVEN" ] && [ "$N_GIVEN" != "${#running[@]}" ]; then
        say "note: it runs ${#running[@]} instance(s), not N=$N_GIVEN; make scale N=$N_GIVEN changes that."
    fi
    if ! curl -fsS -o /dev/null -m 3 "http://127.0.0.1:$PORT/readyz" 2>/dev/null; then
        say "warning: http://127.0.0.1:$PORT/readyz is not 200; see make status and make logs" >&2
    fi
    prometheus_start
    summary
    exit 0
fi

# --- tools --------------------------------------------------------------------------------
need_tool curl curl
ensure_package jq jq
ensure_package nginx nginx
if [ -z "$REDIS_URL" ]; then
    ensure_package redis-server redis-server
    need_tool redis-cli redis-tools
fi

# --- build --------------------------------------------------------------------------------
build_release wsfleet

# --- redis --------------------------------------------------------------------------------
if [ -n "$REDIS_URL" ]; then
    step "using REDIS_URL=$REDIS_URL (no redis-server of ours)"
    # redis-cli -u reads redis:// only (not TLS, Sentinel or Cluster URLs).
    if [[ "$REDIS_URL" == redis://* ]] && command -v redis-cli >/dev/null 2>&1 &&
        [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" != "PONG" ]; then
        say "warning: $REDIS_URL does not answer PING yet; the instances stay unready until it does" >&2
    fi
    redis_url=$REDIS_URL
    rm -f "$REDIS_TOPOLOGY_FILE"
elif [ "$REDIS" != single ]; then
    topology_up
    redis_url="$(topology_url)"
elif redis_alive; then
    redis_port="$(<"$RUN_DIR/redis.port")"
    step "our redis-server is already running on 127.0.0.1:$redis_port (pid $(<"$RUN_DIR/redis.pid"))"
    redis_url="redis://127.0.0.1:$redis_port"
elif port_open "$REDIS_PORT"; then
    # Never join someone else's Redis silently: it may hold another fleet's registry.
    die "127.0.0.1:$REDIS_PORT is already in use by a process make up did not start: set REDIS_PORT to a free port, or REDIS_URL=redis://127.0.0.1:$REDIS_PORT to use that Redis"
else
    redis_start
    redis_url="redis://127.0.0.1:$REDIS_PORT"
fi
[ -n "$REDIS_URL" ] || echo "$REDIS" >"$REDIS_TOPOLOGY_FILE"
echo "$redis_url" >"$RUN_DIR/redis_url"

# --- token --------------------------------------------------------------------------------
if [ -n "${BROADCAST_TOKEN:-}" ]; then
    (umask 077 && printf '%s\n' "$BROADCAST_TOKEN" >"$TOKEN_FILE")
elif [ ! -s "$TOKEN_FILE" ]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE" && echo >>"$TOKEN_FILE")
fi
chmod 600 "$TOKEN_FILE"
# Authentication: AUTH_SECRET given turns it on (kept for make scale and promote), given empty
# turns it off, unset keeps what the last make up chose. A running fleet keeps its setting
# until its instances restart (make promote).
if [ -n "${AUTH_SECRET:-}" ]; then
    [ "${#AUTH_SECRET}" -ge 32 ] || die "AUTH_SECRET must be at least 32 bytes (e.g. openssl rand -hex 32)"
    (umask 077 && printf '%s\n' "$AUTH_SECRET" >"$AUTH_SECRET_FILE")
elif [ -n "${AUTH_SECRET+set}" ]; then
    rm -f "$AUTH_SECRET_FILE"
fi

# --- the instances ------------------------------------------------------------------------
redis_hint() {
    if redis_alive 2>/dev/null || [ "$REDIS" != single ]; then
        printf '; our Redis keeps running (make down stops it)'
    fi
}
# A colour with no live instance starts from the build just made.
[ "${#running[@]}" -gt 0 ] || install_binary "$COLOR"
started=()
for ((n = 1; n <= N; n++)); do
    instance_alive "$COLOR-$n" && continue
    start_instance "$COLOR-$n"
    started+=("$COLOR-$n")
done
if [ "${#started[@]}" -gt 0 ] && ! wait_ready "${started[@]}"; then
    stop_instances "${started[@]}"
    die "wsfleet did not start (see above)$(redis_hint)"
fi
mapfile -t running < <(instances "$COLOR")
echo "$COLOR" >"$RUN_DIR/color"
echo "${#running[@]}" >"$RUN_DIR/scale"

# --- nginx --------------------------------------------------------------------------------
write_nginx_config "${running[@]}" || die "nginx configuration refused (see above)"
if nginx_alive; then
    nginx_reload || die "nginx did not take the new configuration (see above)"
else
    nginx_start
fi
through_nginx() { curl -fsS -o /dev/null -m 2 "http://127.0.0.1:$PORT/readyz" 2>/dev/null; }
wait_until "$READY_TIMEOUT" "/readyz through nginx" through_nginx ||
    die "nginx on :$PORT does not reach a ready instance; see make status and make logs"

prometheus_start
say "the fleet is up: nginx on :$PORT, $COLOR x${#running[@]}."
summary
