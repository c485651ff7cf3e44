# shellcheck shell=bash
# Shared by the bench tools (source it first, from the repository root): what they need checked
# with one line saying what to install, a scratch directory removed on exit after stopping
# every process the tool started (by the pids in $dir/*.pid and in the array `pids`), and free
# loopback ports.

# need_tools TOOL...: each on PATH, or one line naming the Debian packages, and exit 1.
need_tools() {
    local tool package packages=()
    for tool in "$@"; do
        case "$tool" in
        redis-cli | redis-server) package=redis-server ;;
        node) package=nodejs ;;
        *) package=$tool ;;
        esac
        [[ " ${packages[*]} " == *" $package "* ]] || packages+=("$package")
    done
    for tool in "$@"; do
        command -v "$tool" >/dev/null ||
            { echo "error: $tool not found: install it (apt-get install ${packages[*]})" >&2; exit 1; }
    done
}

# need_release BIN...: each built in target/release, or one line saying how, and exit 1.
need_release() {
    local bin
    for bin in "$@"; do
        [ -x "target/release/$bin" ] ||
            { echo "error: target/release/$bin missing: cargo build --release -p wsfleet -p wsfleet-loadtest" >&2; exit 1; }
    done
}

# The scratch directory and what stops everything at exit.
dir=$(mktemp -d)
pids=()
stop_everything() {
    local f pid stopped=("${pids[@]}") i
    for f in "$dir"/*.pid; do [ -s "$f" ] && stopped+=("$(cat "$f")"); done
    # `|| true`: a process already gone must not stop the loop (errexit) before the others.
    for pid in "${stopped[@]}"; do kill "$pid" 2>/dev/null || true; done
    # Then wait (up to 5 s) until they are gone: a Redis still writing its files on the way out
    # would leave the directory behind.
    for ((i = 0; i < 50; i++)); do
        for pid in "${stopped[@]}"; do kill -0 "$pid" 2>/dev/null && break; done || break
        sleep 0.1
    done
    rm -rf "$dir"
}
trap stop_everything EXIT

# closed_loop_through_fault SHELL PORT CONNECTIONS MESSAGES TITLE: a closed loop to the
# instance on PORT while SHELL runs $dir/fault.sh (the fault, which writes its timings to
# $dir/fault.out); then TITLE, those timings, and the load tester's disruption section.
closed_loop_through_fault() {
    target/release/wsfleet-loadtest closed-loop --url "ws://127.0.0.1:$2/ws/chat/" \
        -n "$3" -m "$4" --no-progress --json "$dir/r.json" \
        --during "$1 $dir/fault.sh" --during-after 3s >"$dir/loadtest.out" 2>&1 || true
    echo "$5"
    cat "$dir/fault.out" 2>/dev/null || echo "the fault script did not finish"
    jq -c '{sockets_ok: .connections.ok, open_at_end: .connections.open_at_end, replies: .messages.received,
            unavailable: .messages.unavailable, errors, count_violations,
            disruption: (.disruption | {exit_code, command_seconds, reconnects, longest_gap_ms, counts_lost, counts_repeated})}' "$dir/r.json"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
