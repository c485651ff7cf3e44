# shellcheck shell=bash
# The fleet on this machine: instances by colour, our own nginx in front of them, Redis.
# Sourced (after lib.sh) by up, scale, promote, down, status and monitor. Never run. The
# instances are here; nginx is in lib-nginx.sh and Redis in lib-redis.sh, both sourced below.
#
# Settings (environment; the Makefile passes PORT and N through):
#   PORT=8080            nginx's public listener (127.0.0.1 is not assumed: it listens on all
#                        addresses, like a real front end; the instances stay on loopback)
#   BASE_PORT=8001       instances take the first free loopback ports from here up (keep it
#                        below the ephemeral range, 32768 and up on Linux, where outgoing
#                        connections take their local ports)
#   REDIS_PORT=6379      our redis-server, when we start one; REDIS_URL= uses another Redis
#   REDIS=single         or sentinel, or cluster: the Redis we start (lib-redis-topology.sh; their
#                        ports from REDIS_PORT up); default: what the running fleet uses
#   REDIS_MAXMEMORY=256mb  our redis-server's memory bound (maxmemory; see lib-redis.sh for the
#                        eviction policy and the append-only file)
#   READY_TIMEOUT=30     seconds to wait for an instance's /readyz, nginx, Redis
#   DOWN_TIMEOUT=15      seconds to wait for a draining instance to exit before SIGKILL
#   NGINX_LIMIT_CONN=1000  NGINX_LIMIT_RATE=200  NGINX_LIMIT_BURST=400
#                        per client address: connections, requests/s, burst above that rate
#   NGINX_ADDRESS=       127.0.0.1: nginx listens on loopback only (default: all addresses)
# Any server setting (LOG_FORMAT, HEARTBEAT_INTERVAL, DRAIN_SPREAD, RATE_LIMIT, …) in the
# environment reaches every instance unchanged.

# PORT: given, else the port our running nginx was started on, else 8080.
if [ -z "${PORT:-}" ]; then PORT="$(cat "$RUN_DIR/nginx/port" 2>/dev/null || echo 8080)"; fi
: "${BASE_PORT:=8001}"
# REDIS_PORT as given (a topology with data keeps the ports it was made with, see
# lib-redis-topology.sh), then its default.
REDIS_PORT_GIVEN=${REDIS_PORT:-}
: "${REDIS_PORT:=6379}"
# REDIS: given, else the topology our running Redis has, else single.
if [ -z "${REDIS:-}" ]; then REDIS="$(cat "$RUN_DIR/redis.topology" 2>/dev/null || echo single)"; fi
: "${REDIS_URL:=}"
: "${REDIS_MAXMEMORY:=256mb}"
: "${READY_TIMEOUT:=30}"
: "${DOWN_TIMEOUT:=15}"
: "${NGINX_LIMIT_CONN:=1000}"
: "${NGINX_LIMIT_RATE:=200}"
: "${NGINX_LIMIT_BURST:=400}"
# NGINX_ADDRESS: given, else what our nginx was last started with, else empty (all addresses).
if [ -z "${NGINX_ADDRESS+set}" ]; then NGINX_ADDRESS="$(cat "$RUN_DIR/nginx/address" 2>/dev/null || true)"; fi
NGINX_LISTEN="${NGINX_ADDRESS:+$NGINX_ADDRESS:}$PORT"

# Prometheus file_sd targets (docs/OBSERVABILITY.md, "Target files"): every live instance of
# both colours. The default fleet writes observability/targets/wsfleet.json (when that folder
# exists); a fleet in another RUN_DIR (a test, a second fleet) keeps its own in RUN_DIR.
if [ -z "${PROMETHEUS_TARGETS:-}" ]; then
    if [ "$RUN_DIR" = "$ROOT_DIR/.run" ] && [ -d "$ROOT_DIR/observability/targets" ]; then
        PROMETHEUS_TARGETS="$ROOT_DIR/observability/targets/wsfleet.json"
    else
        PROMETHEUS_TARGETS="$RUN_DIR/prometheus-targets.json"
    fi
fi
NGINX_DIR="$RUN_DIR/nginx"
NGINX_CONF="$NGINX_DIR/nginx.conf"
NGINX_PID="$NGINX_DIR/nginx.pid"
TOKEN_FILE="$RUN_DIR/token"
# The fleet's AUTH_SECRET when make up was given one (authentication on); absent: off.
AUTH_SECRET_FILE="$RUN_DIR/auth_secret"

# rel PATH: PATH relative to the repository root when it is inside it, for shorter messages.
rel() {
    case "$1" in
    "$ROOT_DIR"/*) printf '%s' "${1#"$ROOT_DIR"/}" ;;
    *) printf '%s' "$1" ;;
    esac
}

# check_port NAME VALUE: VALUE is a TCP port number, or die naming NAME.
check_port() {
    if ! [[ "$2" =~ ^[0-9]{1,5}$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
        die "$1 must be a TCP port (1-65535), got ${2@Q}"
    fi
}

# check_count VALUE: VALUE is a number of instances (1-32), or die.
check_count() {
    if ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt 32 ]; then
        die "N must be a number of instances from 1 to 32, got ${1@Q}"
    fi
}

live_color() {
    local c
    c="$(cat "$RUN_DIR/color" 2>/dev/null || true)"
    case "$c" in
    blue | green) printf '%s' "$c" ;;
    *) printf 'blue' ;;
    esac
}

other_color() {
    if [ "$1" = blue ]; then printf 'green'; else printf 'blue'; fi
}

# instance_bin COLOUR: the copy of the binary that colour's instances run. Each colour runs
# its own copy, so a new build (make promote) never changes what a running colour would start
# on make scale, and the command line tells our instances apart from any other process.
instance_bin() { printf '%s' "$RUN_DIR/bin/wsfleet-$1"; }

# install_binary COLOUR [SOURCE]: copies the build (or SOURCE) into place for COLOUR. The copy
# goes in under a temporary name and is renamed, so a running copy is never overwritten.
install_binary() {
    local color=$1 source=${2:-$WSFLEET_BIN} target
    target="$(instance_bin "$color")"
    mkdir -p "$RUN_DIR/bin"
    cp "$source" "$target.tmp.$$"
    chmod 755 "$target.tmp.$$"
    mv -f "$target.tmp.$$" "$target"
}

# instance_alive NAME: NAME (e.g. blue-2) has a live process of ours; a stale pid file is
# noticed and removed with its port and id files.
instance_alive() {
    local name=$1 color=${1%-*}
    if pid_alive "$RUN_DIR/wsfleet-$name.pid" "$(instance_bin "$color")"; then
        return 0
    fi
    rm -f "$RUN_DIR/wsfleet-$name.port" "$RUN_DIR/wsfleet-$name.id"
    return 1
}

# instances COLOUR: the names (blue-1, blue-2, …) of that colour's live instances, in order of
# their number, one per line. Stale pid files are cleaned up on the way.
instances() {
    local color=$1 file name
    while IFS= read -r file; do
        [ -n "$file" ] || continue
        name="$(basename "$file" .pid)"
        name="${name#wsfleet-}"
        [[ "$name" =~ ^$color-[0-9]+$ ]] || continue
        instance_alive "$name" && printf '%s\n' "$name"
    done < <(compgen -G "$RUN_DIR/wsfleet-$color-*.pid" || true) | sort -t- -k2,2n
}

instance_port() { cat "$RUN_DIR/wsfleet-$1.port" 2>/dev/null || true; }
instance_pid() { cat "$RUN_DIR/wsfleet-$1.pid" 2>/dev/null || true; }
instance_id() { cat "$RUN_DIR/wsfleet-$1.id" 2>/dev/null || true; }

# port_taken PORT: in use by anything, or promised to one of our instances, nginx or Redis.
port_taken() {
    local p=$1 f
    [ "$p" = "$PORT" ] && return 0
    [ "$p" = "$REDIS_PORT" ] && return 0
    for f in "$RUN_DIR"/wsfleet-*.port; do
        [ -f "$f" ] && [ "$(<"$f")" = "$p" ] && return 0
    done
    if [ "$REDIS" != single ] && [ -z "$REDIS_URL" ]; then
        topology_ports | grep -qx "$p" && return 0
    fi
    port_open "$p"
}

# free_instance_port: the first free loopback port from BASE_PORT up (at most 200 tried).
free_instance_port() {
    local p=$BASE_PORT
    while port_taken "$p"; do
        p=$((p + 1))
        [ "$p" -lt $((BASE_PORT + 200)) ] || die "no free port in $BASE_PORT-$((BASE_PORT + 199)): set BASE_PORT"
    done
    printf '%s' "$p"
}

# start_instance NAME [ENV=VALUE...]: starts instance NAME (colour-n) on a free loopback port,
# with the fleet's Redis and token, in the background. Extra ENV assignments (PROMOTE_ENV) come
# last and so win. Does not wait for readiness: see wait_ready.
start_instance() {
    local name=$1 color=${1%-*} port id bin
    shift
    port="$(free_instance_port)"
    id="$name-$(od -An -tx1 -N3 /dev/urandom | tr -d ' \n')"
    bin="$(instance_bin "$color")"
    [ -x "$bin" ] || die "$(rel "$bin") is missing: run make up (or make promote) to install a build"
    echo "$port" >"$RUN_DIR/wsfleet-$name.port"
    echo "$id" >"$RUN_DIR/wsfleet-$name.id"
    # Remember where this run's lines start, to show them if the start fails.
    local start=0
    if [ -f "$RUN_DIR/wsfleet-$name.log" ]; then start="$(wc -c <"$RUN_DIR/wsfleet-$name.log")"; fi
    echo "$start" >"$RUN_DIR/wsfleet-$name.logstart"
    step "starting wsfleet $name on 127.0.0.1:$port (id $id, log $(rel "$RUN_DIR/wsfleet-$name.log"))"
    # The token goes by environment, not the command line; the extra assignments through env(1).
    # Authentication is the fleet's, as make up chose it (the file), never the caller's shell:
    # an instance that make scale starts must not be the one without it.
    local auth=(-u AUTH_SECRET -u AUTH_SECRET_FILE -u AUTH_PUBLIC_KEY_FILE)
    if [ -s "$AUTH_SECRET_FILE" ]; then auth+=(AUTH_SECRET_FILE="$AUTH_SECRET_FILE"); fi
    BIND_ADDR="127.0.0.1:$port" REDIS_URL="$(<"$RUN_DIR/redis_url")" \
        BROADCAST_TOKEN="$(<"$TOKEN_FILE")" INSTANCE_ID="$id" COLOR="$color" \
        spawn_env "$RUN_DIR/wsfleet-$name.log" "$RUN_DIR/wsfleet-$name.pid" "${auth[@]}" "$@" -- "$bin"
    write_targets
}

# spawn_env LOG PIDFILE [ENV=VALUE...] -- COMMAND...: spawn, with extra environment.
spawn_env() {
    local log=$1 pidfile=$2 envs=()
    shift 2
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    shift
    spawn "$log" "$pidfile" env "${envs[@]}" "$@"
}

# write_targets: rewrites the Prometheus target file from the live instances (to a temporary
# name, then renamed, so Prometheus never reads half a file).
write_targets() {
    local color name targets groups=()
    for color in blue green; do
        targets=()
        while IFS= read -r name; do
            targets+=("\"127.0.0.1:$(instance_port "$name")\"")
        done < <(instances "$color")
        if [ "${#targets[@]}" -gt 0 ]; then
            groups+=("{\"targets\": [$(IFS=,; printf '%s' "${targets[*]}")], \"labels\": {\"slot\": \"$color\"}}")
        fi
    done
    mkdir -p "$(dirname "$PROMETHEUS_TARGETS")"
    printf '[%s]\n' "$(IFS=,; printf '%s' "${groups[*]}")" >"$PROMETHEUS_TARGETS.tmp"
    mv -f "$PROMETHEUS_TARGETS.tmp" "$PROMETHEUS_TARGETS"
}

# instance_ready NAME: its /readyz answers 200.
instance_ready() {
    curl -fsS -o /dev/null -m 2 "http://127.0.0.1:$(instance_port "$1")/readyz" 2>/dev/null
}

# show_start_log NAME: the lines instance NAME logged since its last start, to stderr.
show_start_log() {
    local name=$1 start
    start="$(cat "$RUN_DIR/wsfleet-$name.logstart" 2>/dev/null || echo 0)"
    say "--- $(rel "$RUN_DIR/wsfleet-$name.log") (last lines) ---" >&2
    tail -c "+$((start + 1))" "$RUN_DIR/wsfleet-$name.log" 2>/dev/null | tail -n 15 >&2 || true
}

# wait_ready NAME...: polls every instance's /readyz until all answer 200. Fails (1) as soon as
# one of them has exited, or after READY_TIMEOUT seconds, showing that instance's log.
wait_ready() {
    local names=("$@") name pending deadline=$((SECONDS + READY_TIMEOUT))
    step "waiting for /readyz of ${names[*]} (up to ${READY_TIMEOUT}s)"
    while true; do
        pending=()
        for name in "${names[@]}"; do
            if gone "$(instance_pid "$name")"; then
                show_start_log "$name"
                say "wsfleet $name exited during start-up (its log is above)" >&2
                return 1
            fi
            instance_ready "$name" || pending+=("$name")
        done
        [ "${#pending[@]}" -eq 0 ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            for name in "${pending[@]}"; do
                show_start_log "$name"
                curl -sS -m 2 "http://127.0.0.1:$(instance_port "$name")/readyz" >&2 || true
                echo >&2
            done
            say "not ready within ${READY_TIMEOUT}s: ${pending[*]}" >&2
            return 1
        fi
        sleep 0.2
    done
}

# local_connections NAME: the sockets instance NAME holds now (from its /status), or 0.
local_connections() {
    local body
    body="$(curl -fsS -m 2 "http://127.0.0.1:$(instance_port "$1")/status" 2>/dev/null || true)"
    json_number "$body" .connections.local
}

# stop_instances NAME...: SIGTERM every one (they drain in parallel: bye, close 1001, registry
# clean-up), wait for all to exit, SIGKILL any still running after DOWN_TIMEOUT seconds. Removes
# their run files (not their logs).
stop_instances() {
    local name pid pids=() names=()
    for name in "$@"; do
        instance_alive "$name" || continue
        pid="$(instance_pid "$name")"
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
        names+=("$name")
    done
    if [ "${#pids[@]}" -gt 0 ]; then
        step "SIGTERM sent to ${names[*]}: draining (bye, close 1001), waiting for exit (up to ${DOWN_TIMEOUT}s)"
        # shellcheck disable=SC2317 # called by wait_until
        all_gone() {
            local p
            for p in "${pids[@]}"; do gone "$p" || return 1; done
        }
        if ! wait_until "$DOWN_TIMEOUT" "the instances to exit" all_gone; then
            for pid in "${pids[@]}"; do
                if ! gone "$pid"; then
                    say "wsfleet pid $pid is still running after ${DOWN_TIMEOUT}s; sending SIGKILL" >&2
                    kill -KILL "$pid" 2>/dev/null || true
                fi
            done
            wait_until 5 "the killed instances to die" all_gone || die "could not stop ${names[*]}"
        fi
    fi
    for name in "$@"; do
        rm -f "$RUN_DIR/wsfleet-$name".{pid,port,id,logstart}
    done
    write_targets
}

# broadcast_line PORT: the curl line for POST /broadcast to an instance on loopback.
broadcast_line() {
    printf "curl -sS -X POST http://127.0.0.1:%s/broadcast -H \"Authorization: Bearer \$(cat %s)\" -H 'Content-Type: application/json' -d '{\"message\":\"hello\"}'" \
        "$1" "$(rel "$TOKEN_FILE")"
}

# shellcheck source-path=SCRIPTDIR source=lib-nginx.sh
source "$ROOT_DIR/scripts/lib-nginx.sh"
# shellcheck source-path=SCRIPTDIR source=lib-redis.sh
source "$ROOT_DIR/scripts/lib-redis.sh"
