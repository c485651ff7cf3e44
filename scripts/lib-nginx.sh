# shellcheck shell=bash
# Our own nginx in front of the fleet: its configuration (rendered from nginx/*.template and
# checked with nginx -t), start, graceful reload, stop, and the workers a killed master leaves
# behind. Sourced by lib-fleet.sh (its settings: PORT, NGINX_*); never run.

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
        "WSFLEET_CONFIG_ID=$CONFIG_ID" "WSFLEET_STATUS_LISTEN=unix:$NGINX_DIR/status.sock"
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
    # A master killed with SIGKILL leaves its status socket behind, and nginx will not bind a
    # unix socket whose file exists. No nginx of ours runs here, so it is stale.
    rm -f "$NGINX_DIR/status.sock"
    if port_open "$PORT"; then
        die "port $PORT is already in use by a process make up did not start: set PORT to a free port (make up PORT=8081)"
    fi
    echo "$PORT" >"$NGINX_DIR/port"
    echo "$NGINX_ADDRESS" >"$NGINX_DIR/address"
    step "starting nginx on :$PORT (config $(rel "$NGINX_CONF"), logs in $(rel "$NGINX_DIR")/)"
    local log_start
    log_start=$(($(file_size "$NGINX_DIR/error.log") + 1))
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
