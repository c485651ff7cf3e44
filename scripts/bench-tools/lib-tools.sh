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
    local f pid
    # `|| true`: a process already gone must not stop the loop (errexit) before the others.
    for f in "$dir"/*.pid; do [ -s "$f" ] && { kill "$(cat "$f")" 2>/dev/null || true; }; done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap stop_everything EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
