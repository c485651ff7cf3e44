#!/usr/bin/env bash
# make down: drain and stop every wsfleet instance we started, then our redis-server.
#
# Instances get SIGTERM together (so they drain as one fleet) and are waited for: each
# exits within SHUTDOWN_TIMEOUT (10 s by default); one still running after DOWN_TIMEOUT is
# killed. Redis goes last, because a draining instance still talks to it. A Redis given by
# REDIS_URL, or one that was already running and not ours, is left alone.
#
#   DOWN_TIMEOUT=15   seconds to wait for the instances to exit before SIGKILL
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${DOWN_TIMEOUT:=15}"

BIN="$ROOT_DIR/$WSFLEET_BIN"
stopped=0

if [ ! -d "$RUN_DIR" ]; then
    say "nothing to stop: $RUN_DIR does not exist"
    exit 0
fi

# Signal every live instance first, then wait for all: they drain in parallel.
pids=()
files=()
while IFS= read -r file; do
    [ -n "$file" ] || continue
    if pid_alive "$file" "$BIN"; then
        pid="$(<"$file")"
        step "SIGTERM to wsfleet $(basename "$file" .pid) (pid $pid); it drains its sockets"
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
        files+=("$file")
    fi
done < <(instance_files)

all_gone() {
    local p
    for p in "${pids[@]}"; do
        gone "$p" || return 1
    done
}

if [ "${#pids[@]}" -gt 0 ]; then
    step "waiting for ${#pids[@]} instance(s) to exit (up to ${DOWN_TIMEOUT}s)"
    if ! wait_until "$DOWN_TIMEOUT" "the instances to exit" all_gone; then
        for pid in "${pids[@]}"; do
            if ! gone "$pid"; then
                say "wsfleet pid $pid is still running; sending SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
        wait_until 5 "the killed instances to die" all_gone || die "could not stop every instance"
    fi
    rm -f "${files[@]}"
    stopped=$((stopped + ${#pids[@]}))
    say "wsfleet stopped."
fi

if pid_alive "$RUN_DIR/redis.pid" "redis-server"; then
    # SIGTERM: Redis saves its data to $RUN_DIR/redis/ and exits.
    stop_pid "$RUN_DIR/redis.pid" "redis-server" 15 "redis-server"
    stopped=$((stopped + 1))
    say "redis-server stopped."
fi

if [ "$stopped" -eq 0 ]; then
    say "nothing to stop: no wsfleet instance or redis-server of ours is running."
fi
