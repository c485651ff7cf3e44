# shellcheck shell=bash
# Helpers shared by the scripts in this folder. Sourced, never run.
#
# Run state lives in one git-ignored directory, $RUN_DIR (default .run/; a relative path is
# taken from the repository root and made absolute here):
#   redis.pid  redis.port  redis.log  redis/      our redis-server, when we started one
#   redis-<name>.{pid,port,log}  redis-<topology>/  our Sentinel set or cluster (REDIS=…), and
#   redis.topology                                which one runs (lib-redis-topology.sh)
#   redis_url                                     the Redis the instances were given
#   wsfleet-<colour>-<n>.{pid,port,id,log}        instance n of a colour (blue, green)
#   bin/wsfleet-<colour>                          the binary that colour runs (a copy of the build)
#   color  scale                                  the live colour and its number of instances
#   nginx/                                        our nginx: nginx.conf, wsfleet.conf, pid, logs, temp
#   token                                         BROADCAST_TOKEN, mode 600
# A pid file is never trusted on its own: see `pid_alive`. The fleet's own helpers (instances,
# nginx, Redis) are in lib-fleet.sh, lib-nginx.sh and lib-redis.sh.

set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"

: "${RUN_DIR:=.run}"
case "$RUN_DIR" in
/*) ;;
*) RUN_DIR="$ROOT_DIR/$RUN_DIR" ;;
esac
: "${CARGO_TARGET_DIR:=target}"
# The release binaries the scripts run. WSFLEET_BIN / LOADTEST_BIN override them (e.g. binaries
# built elsewhere, with SKIP_BUILD=1 so that nothing is built).
: "${WSFLEET_BIN:=$CARGO_TARGET_DIR/release/wsfleet}"
: "${LOADTEST_BIN:=$CARGO_TARGET_DIR/release/wsfleet-loadtest}"
case "$WSFLEET_BIN" in /*) ;; *) WSFLEET_BIN="$ROOT_DIR/$WSFLEET_BIN" ;; esac
case "$LOADTEST_BIN" in /*) ;; *) LOADTEST_BIN="$ROOT_DIR/$LOADTEST_BIN" ;; esac
: "${SKIP_BUILD:=0}"

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }
has_apt() { command -v apt-get >/dev/null 2>&1; }

# need_cargo: cargo on PATH, or one line saying how to get it.
need_cargo() {
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
}

# need_tool TOOL PACKAGE: the tool is on PATH, or one line naming the package to install.
need_tool() {
    command -v "$1" >/dev/null 2>&1 ||
        die "$1 not found: install the $2 package (e.g. apt-get install -y $2), then run this again"
}

# ensure_package TOOL PACKAGE: installs PACKAGE with apt-get when TOOL is missing and we are
# root on Debian/Ubuntu; otherwise the one-line hint of need_tool.
ensure_package() {
    local tool=$1 package=$2
    command -v "$tool" >/dev/null 2>&1 && return 0
    if is_root && has_apt; then
        step "$tool not found: installing $package (apt-get update && apt-get install -y $package)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
        command -v "$tool" >/dev/null 2>&1 || die "installing $package did not provide $tool"
    else
        need_tool "$tool" "$package"
    fi
}

# pid_alive FILE PATTERN: true when FILE holds the pid of a running process whose command
# line contains PATTERN. A pid file whose process is gone (or whose pid now belongs to some
# other program) is stale: it is removed, with a note, and the answer is false.
pid_alive() {
    local file=$1 pattern=$2 pid args
    [ -f "$file" ] || return 1
    pid="$(<"$file")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && ! gone "$pid"; then
        args="$(ps -p "$pid" -o args= 2>/dev/null || true)"
        if [[ "$args" == *"$pattern"* ]]; then
            return 0
        fi
    fi
    say "note: removing stale pid file $file (process ${pid:-?} is gone or is not ours)" >&2
    rm -f "$file"
    return 1
}

# spawn LOG PIDFILE COMMAND...: starts COMMAND in the background, detached from this
# terminal's session (setsid, so a Ctrl-C here does not reach it), stdin closed, output
# appended to LOG, and writes its pid to PIDFILE. Environment assignments placed before
# `spawn` reach COMMAND without showing in its command line.
spawn() {
    local log=$1 pidfile=$2
    shift 2
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" </dev/null >>"$log" 2>&1 &
    else
        nohup "$@" </dev/null >>"$log" 2>&1 &
    fi
    echo $! >"$pidfile"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s until it succeeds or
# SECONDS pass (then returns 1). Never a blind sleep: it returns as soon as COMMAND succeeds.
wait_until() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "timed out after ${limit}s waiting for $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

# stop_pid FILE PATTERN SECONDS NAME: SIGTERM the process of FILE, wait for it to exit,
# SIGKILL it if it outlives SECONDS. Removes FILE.
stop_pid() {
    local file=$1 pattern=$2 limit=$3 name=$4 pid
    pid_alive "$file" "$pattern" || return 0
    pid="$(<"$file")"
    step "stopping $name (pid $pid, SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until "$limit" "$name to exit" gone "$pid"; then
        say "$name did not exit within ${limit}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 "$name to die" gone "$pid" || die "could not stop $name (pid $pid)"
    fi
    rm -f "$file"
}

# gone PID: the process has exited (a zombie waiting to be reaped counts as exited).
gone() {
    local state
    state="$(ps -p "$1" -o stat= 2>/dev/null || true)"
    [ -z "$state" ] || [[ "$state" == Z* ]]
}

# file_size FILE: FILE's size in bytes, 0 when it does not exist (yet). A bare
# `wc -c <FILE 2>/dev/null` still prints "No such file or directory": the shell opens FILE
# before the 2> applies.
file_size() {
    if [ -f "$1" ]; then wc -c <"$1"; else printf '0'; fi
}

# json_number JSON FILTER: the number jq's FILTER (e.g. .connections.local) picks from JSON,
# or 0 when JSON is empty or not JSON or holds no number there. Needs jq (ensure_package jq jq).
json_number() {
    local n
    n="$(jq -r "($2) | numbers" <<<"$1" 2>/dev/null | head -n 1 || true)"
    if [[ "$n" =~ ^[0-9]+$ ]]; then printf '%s' "$n"; else printf '0'; fi
}

# show_json: pretty-prints JSON from stdin with jq, else python3, else as it came.
show_json() {
    if command -v jq >/dev/null 2>&1; then
        jq .
    elif command -v python3 >/dev/null 2>&1; then
        python3 -m json.tool
    else
        cat
        echo
    fi
}

# build_release PACKAGE...: cargo build --release of these packages, unless SKIP_BUILD=1 (then
# the binaries must already exist). Checks that WSFLEET_BIN (and LOADTEST_BIN when the load
# tester is asked for) are executable afterwards.
build_release() {
    local args=() p
    for p in "$@"; do args+=(-p "$p"); done
    if [ "$SKIP_BUILD" = 1 ]; then
        step "SKIP_BUILD=1: using the binaries already built"
    else
        need_cargo
        step "building: cargo build --release ${args[*]} (the first build takes a few minutes)"
        cargo build --release "${args[@]}"
    fi
    [ -x "$WSFLEET_BIN" ] ||
        die "$WSFLEET_BIN is missing: build it (cargo build --release -p wsfleet) or set WSFLEET_BIN"
    if [[ " $* " == *" wsfleet-loadtest "* ]]; then
        [ -x "$LOADTEST_BIN" ] ||
            die "$LOADTEST_BIN is missing: build it (cargo build --release -p wsfleet-loadtest) or set LOADTEST_BIN"
    fi
}
