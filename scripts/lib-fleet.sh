# shellcheck shell=bash
# The fleet on this machine: instances by colour, our own nginx in front of them, Redis.
# Sourced (after lib.sh) by up, scale, promote, down, status and monitor. Never run.
#
# Settings (environment; the Makefile passes PORT and N through):
#   PORT=8080            nginx's public listener (127.0.0.1 is not assumed: it listens on all
#                        addresses, like a real front end; the instances stay on loopback)
#   BASE_PORT=8001       instances take the first free loopback ports from here up (keep it
#                        below the ephemeral range, 32768 and up on Linux, where outgoing
#                        connections take their local ports)
#   REDIS_PORT=6379      our redis-server, when we start one; REDIS_URL= uses another Redis
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
: "${REDIS_PORT:=6379}"
: "${REDIS_URL:=}"
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
    BIND_ADDR="127.0.0.1:$port" REDIS_URL="$(<"$RUN_DIR/redis_url")" \
        BROADCAST_TOKEN="$(<"$TOKEN_FILE")" INSTANCE_ID="$id" COLOR="$color" \
        spawn_env "$RUN_DIR/wsfleet-$name.log" "$RUN_DIR/wsfleet-$name.pid" "$@" -- "$bin"
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
    json_number "$body" local
}

# json_number JSON KEY: the first number that KEY holds in JSON (compact, as the server writes
# it), or 0. No jq needed.
json_number() {
    local match
    match="$(grep -o "\"$2\":[0-9]*" <<<"$1" | head -n 1 || true)"
    printf '%s' "${match#*:}" | grep -E '^[0-9]+$' || printf '0'
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

# --- nginx ---------------------------------------------------------------------------------

nginx_alive() {
    # `nginx -t` leaves an empty pid file behind when no master runs: nothing to report.
    if [ -f "$NGINX_PID" ] && [ ! -s "$NGINX_PID" ]; then rm -f "$NGINX_PID"; fi
    pid_alive "$NGINX_PID" "$NGINX_CONF"
}

nginx_cmd() { nginx -p "$NGINX_DIR/" -c "$NGINX_CONF" -e "$NGINX_DIR/error.log" "$@"; }

# render TEMPLATE OUT NAME=VALUE...: writes TEMPLATE with each ${NAME} replaced by VALUE; fails
# if a ${WSFLEET_…} placeholder is left over. (The compose path renders the same template
# with the nginx image's envsubst.)
render() {
    local template=$1 out=$2 text pair name value
    shift 2
    text="$(<"$template")"
    # bash 5.2 would otherwise read "&" in a replacement as the matched text.
    shopt -u patsub_replacement 2>/dev/null || true
    for pair in "$@"; do
        name=${pair%%=*}
        value=${pair#*=}
        text=${text//"\${$name}"/$value}
    done
    # shellcheck disable=SC2016 # a literal ${, not an expansion
    if [[ "$text" == *'${WSFLEET_'* ]]; then
        die "$(rel "$template"): placeholder left unrendered: $(grep -o '\${WSFLEET_[A-Z_]*}' <<<"$text" | head -n 1)"
    fi
    printf '%s\n' "$text" >"$out"
}

# write_nginx_config NAME...: renders nginx's configuration with NAME... (live instances) as
# the upstream, checks it with nginx -t, and keeps the previous one if the check fails. Sets
# CONFIG_ID to the new rendering's id.
write_nginx_config() {
    local name servers="" nofile user_line="" conns
    for name in "$@"; do
        servers+="server 127.0.0.1:$(instance_port "$name"); # $name $(instance_id "$name")"$'\n    '
    done
    [ -n "$servers" ] || die "no live instance to put behind nginx"
    mkdir -p "$NGINX_DIR/temp"
    nofile="$(ulimit -Hn)"
    if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
    conns=$((nofile > 16448 ? 16384 : nofile - 64))
    if is_root; then user_line="user $(id -un) $(id -gn);"; fi
    CONFIG_ID="$(date +%s)-$$-$RANDOM"
    render "$ROOT_DIR/nginx/nginx-native.conf.template" "$NGINX_CONF" \
        "WSFLEET_USER_LINE=$user_line" "WSFLEET_NGINX_DIR=$NGINX_DIR" \
        "WSFLEET_NOFILE=$nofile" "WSFLEET_WORKER_CONNECTIONS=$conns"
    if [ -f "$NGINX_DIR/wsfleet.conf" ]; then
        cp "$NGINX_DIR/wsfleet.conf" "$NGINX_DIR/wsfleet.conf.prev"
    fi
    render "$ROOT_DIR/nginx/wsfleet.conf.template" "$NGINX_DIR/wsfleet.conf" \
        "WSFLEET_LISTEN=$NGINX_LISTEN" "WSFLEET_UPSTREAM_SERVERS=${servers%$'\n    '}" \
        "WSFLEET_LIMIT_CONN=$NGINX_LIMIT_CONN" "WSFLEET_LIMIT_RATE=$NGINX_LIMIT_RATE" \
        "WSFLEET_LIMIT_BURST=$NGINX_LIMIT_BURST" "WSFLEET_ACCESS_LOG=$NGINX_DIR/access.log" \
        "WSFLEET_CONFIG_ID=$CONFIG_ID"
    local check
    if ! check="$(nginx_cmd -t 2>&1)"; then
        say "$check" >&2
        if [ -f "$NGINX_DIR/wsfleet.conf.prev" ]; then
            mv -f "$NGINX_DIR/wsfleet.conf.prev" "$NGINX_DIR/wsfleet.conf"
        fi
        say "nginx -t refused the new configuration (above); the previous one is kept" >&2
        return 1
    fi
}

# nginx_config_id: the config id the running nginx serves (from /nginx-health), or nothing.
nginx_config_id() {
    curl -sS -o /dev/null -D - -m 2 "http://127.0.0.1:$PORT/nginx-health" 2>/dev/null |
        tr -d '\r' | sed -n 's/^[Xx]-[Ww]sfleet-[Cc]onfig: //p'
}

# nginx_serves ID: nginx answers with configuration ID (so new workers run it).
nginx_serves() { [ "$(nginx_config_id)" = "$1" ]; }

# nginx_orphans: nginx processes of ours whose master is gone (a SIGKILLed master leaves its
# workers running, still serving the port). Call only when nginx_alive is false. They are
# recognised by what they hold open: files under $NGINX_DIR (the logs), never by name alone.
nginx_orphans() {
    local pid fd
    for pid in $(pgrep -x nginx || true); do
        for fd in /proc/"$pid"/fd/*; do
            if [[ "$(readlink "$fd" 2>/dev/null || true)" == "$NGINX_DIR/"* ]]; then
                printf '%s\n' "$pid"
                break
            fi
        done
    done
}

# stop_nginx_orphans: SIGQUIT (then SIGKILL) the workers a dead master of ours left behind.
stop_nginx_orphans() {
    local orphans=() pid
    mapfile -t orphans < <(nginx_orphans)
    [ "${#orphans[@]}" -gt 0 ] || return 0
    say "note: nginx processes ${orphans[*]} outlived their master (killed?); stopping them" >&2
    kill -QUIT "${orphans[@]}" 2>/dev/null || true
    # shellcheck disable=SC2317 # called by wait_until
    orphans_gone() { for pid in "${orphans[@]}"; do gone "$pid" || return 1; done; }
    if ! wait_until 10 "the orphaned nginx workers to exit" orphans_gone; then
        kill -KILL "${orphans[@]}" 2>/dev/null || true
    fi
}

# nginx_start: starts our nginx (its own master, in the foreground of its own session, so its
# pid is ours to track) and waits until it serves the configuration just written.
nginx_start() {
    stop_nginx_orphans
    if port_open "$PORT"; then
        die "port $PORT is already in use by a process make up did not start: set PORT to a free port (make up PORT=8081)"
    fi
    echo "$PORT" >"$NGINX_DIR/port"
    echo "$NGINX_ADDRESS" >"$NGINX_DIR/address"
    step "starting nginx on :$PORT (config $(rel "$NGINX_CONF"), logs in $(rel "$NGINX_DIR")/)"
    local log_start
    log_start=$(($(wc -c <"$NGINX_DIR/error.log" 2>/dev/null || echo 0) + 1))
    spawn "$NGINX_DIR/stderr.log" "$NGINX_PID" nginx -p "$NGINX_DIR/" -c "$NGINX_CONF" \
        -e "$NGINX_DIR/error.log" -g 'daemon off;'
    local pid
    pid="$(<"$NGINX_PID")"
    # shellcheck disable=SC2317 # called by wait_until
    nginx_up() { gone "$pid" || nginx_serves "$CONFIG_ID"; }
    if ! wait_until "$READY_TIMEOUT" "nginx to serve on :$PORT" nginx_up || gone "$pid"; then
        tail -c "+$log_start" "$NGINX_DIR/error.log" 2>/dev/null | tail -n 10 >&2 || true
        tail -n 5 "$NGINX_DIR/stderr.log" >&2 || true
        gone "$pid" && rm -f "$NGINX_PID"
        die "nginx did not start (its log is above)"
    fi
}

# nginx_reload: graceful reload (SIGHUP to our master): new workers take the configuration
# just written; old workers stop accepting and finish the connections they hold (upgraded
# sockets stay up until their instance closes them). Waits until the new configuration serves.
nginx_reload() {
    local pid
    pid="$(<"$NGINX_PID")"
    step "reloading nginx gracefully (SIGHUP to master pid $pid)"
    kill -HUP "$pid"
    if ! wait_until 15 "nginx to serve the new configuration" nginx_serves "$CONFIG_ID"; then
        tail -n 10 "$NGINX_DIR/error.log" >&2 || true
        return 1
    fi
}

# nginx_stop: graceful stop (SIGQUIT: stop accepting, finish open connections), then SIGTERM
# (fast) after SECONDS, then SIGKILL.
nginx_stop() {
    local limit=${1:-15} pid
    nginx_alive || return 0
    pid="$(<"$NGINX_PID")"
    kill -QUIT "$pid" 2>/dev/null || true
    if ! wait_until "$limit" "nginx to exit" gone "$pid"; then
        say "nginx still has open connections after ${limit}s; fast shutdown (SIGTERM)" >&2
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_until 5 "nginx to exit" gone "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_until 5 "nginx to die" gone "$pid" || die "could not stop nginx (pid $pid)"
        fi
    fi
    rm -f "$NGINX_PID"
}

# upstream_names: the instances the running nginx configuration sends traffic to.
upstream_names() {
    sed -n 's/^ *server 127\.0\.0\.1:[0-9]*; # \([a-z]*-[0-9]*\) .*/\1/p' "$NGINX_DIR/wsfleet.conf" 2>/dev/null || true
}

# --- Redis ---------------------------------------------------------------------------------

# redis_alive: our redis-server runs (its title names the port it was given).
redis_alive() {
    local port
    port="$(cat "$RUN_DIR/redis.port" 2>/dev/null || echo "?")"
    pid_alive "$RUN_DIR/redis.pid" "redis-server 127.0.0.1:$port"
}

# --- summaries -----------------------------------------------------------------------------

# broadcast_line PORT: the curl line for POST /broadcast to an instance on loopback.
broadcast_line() {
    printf "curl -sS -X POST http://127.0.0.1:%s/broadcast -H \"Authorization: Bearer \$(cat %s)\" -H 'Content-Type: application/json' -d '{\"message\":\"hello\"}'" \
        "$1" "$(rel "$TOKEN_FILE")"
}
