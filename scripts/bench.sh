#!/usr/bin/env bash
# scripts/bench.sh: reproduces the measurements of docs/BENCHMARKS.md on this machine.
#
#   scripts/bench.sh [all|throughput|latency|memory]     (default: all)
#
# Builds wsfleet and wsfleet-loadtest (release), starts its own redis-server and one wsfleet
# instance on loopback ports of its own, runs the load tester, prints each number next to
# its target, and stops everything it started (by pid) however it exits. Nothing but
# 127.0.0.1 is contacted. Settings (environment):
#   BENCH_REDIS_PORT=6390  BENCH_PORT=8090            ports for our redis and wsfleet
#   BENCH_SOCKETS=1000 BENCH_MESSAGES=200             throughput: closed loop, sockets x msgs
#   BENCH_RATE=10 BENCH_DURATION=30s                  latency: open loop at 1000 x RATE msg/s
#   BENCH_IDLE_SOCKETS=10000 BENCH_HOLD=20s           memory: idle sockets held this long
#   BENCH_QUIET_WAIT=120                              seconds to wait for other work to calm
#   BENCH_OUT=.run/bench                              JSON reports, logs, metrics snapshots
#   CARGO_TARGET_DIR=target
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# sort and join must agree on one collation for the histogram arithmetic below.
export LC_ALL=C

WHAT="${1:-all}"
case "$WHAT" in
all | throughput | latency | memory) ;;
*) die "usage: scripts/bench.sh [all|throughput|latency|memory]" ;;
esac

: "${BENCH_REDIS_PORT:=6390}"
: "${BENCH_PORT:=8090}"
: "${BENCH_SOCKETS:=1000}"
: "${BENCH_MESSAGES:=200}"
: "${BENCH_RATE:=10}"
: "${BENCH_DURATION:=30s}"
: "${BENCH_IDLE_SOCKETS:=10000}"
: "${BENCH_HOLD:=20s}"
: "${BENCH_QUIET_WAIT:=120}"
: "${BENCH_OUT:=$RUN_DIR/bench}"

# One load-tester process per run, so stay under one process's open-file limit.
[ "$BENCH_IDLE_SOCKETS" -le 10000 ] ||
    die "BENCH_IDLE_SOCKETS=$BENCH_IDLE_SOCKETS: this script runs one load-tester process; keep it at most 10000"

need_cargo
need_tool redis-server redis-server
need_tool redis-cli redis-tools
need_tool curl curl
need_tool jq jq
need_tool awk gawk

LOADTEST="$CARGO_TARGET_DIR/release/wsfleet-loadtest"
URL="ws://127.0.0.1:$BENCH_PORT/ws/chat/"
REDIS_PID=""
SERVER_PID=""
LOADTEST_PID=""
RESULTS=()

# stop PID NAME: SIGTERM, wait up to 15 s (wsfleet drains), then SIGKILL. Only our own pids.
stop() {
    local pid=$1 name=$2
    [ -n "$pid" ] || return 0
    gone "$pid" && return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until 15 "$name to exit" gone "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    stop "$LOADTEST_PID" wsfleet-loadtest
    stop "$SERVER_PID" wsfleet
    stop "$REDIS_PID" redis-server
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# machine_busy: percent of the whole machine (all cores) busy over one second.
machine_busy() {
    local a b
    a="$(head -1 /proc/stat)"
    sleep 1
    b="$(head -1 /proc/stat)"
    printf '%s\n%s\n' "$a" "$b" | awk '{
        idle[NR] = $5 + $6; total[NR] = 0
        for (i = 2; i <= 9; i++) total[NR] += $i
    } END {
        t = total[2] - total[1]
        printf "%d\n", (t > 0) ? 100 * (t - (idle[2] - idle[1])) / t : 0
    }'
}

# wait_for_quiet: client and server share 2 cores, so other work (a build) skews every
# number. Wait for it to calm down; measure anyway after BENCH_QUIET_WAIT, loudly.
wait_for_quiet() {
    local deadline=$((SECONDS + BENCH_QUIET_WAIT)) busy
    while busy="$(machine_busy)" && [ "$busy" -gt 15 ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "warning: the machine is ${busy}% busy with other work; measuring anyway (see 'cpu other' in the report)"
            return 0
        fi
        say "machine ${busy}% busy with other work; waiting for it to calm down"
    done
}

redis_up() { redis-cli -p "$BENCH_REDIS_PORT" ping >/dev/null 2>&1; }
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$BENCH_PORT/readyz")" = 200 ]; }

start_redis() {
    port_open "$BENCH_REDIS_PORT" && die "port $BENCH_REDIS_PORT is taken; set BENCH_REDIS_PORT"
    step "redis-server on 127.0.0.1:$BENCH_REDIS_PORT (no persistence)"
    redis-server --port "$BENCH_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        >"$BENCH_OUT/redis.log" 2>&1 </dev/null &
    REDIS_PID=$!
    wait_until 10 "redis to answer" redis_up ||
        die "redis-server did not start; see $BENCH_OUT/redis.log"
}

# start_server: a fresh wsfleet; heartbeats every 5 s so every run sees the fan-out at work.
start_server() {
    port_open "$BENCH_PORT" && die "port $BENCH_PORT is taken; set BENCH_PORT"
    step "wsfleet on 127.0.0.1:$BENCH_PORT (RATE_LIMIT=0, HEARTBEAT_INTERVAL=5s)"
    REDIS_URL="redis://127.0.0.1:$BENCH_REDIS_PORT" BIND_ADDR="127.0.0.1:$BENCH_PORT" \
        RATE_LIMIT=0 HEARTBEAT_INTERVAL=5s LOG_FORMAT=json RUST_LOG=warn \
        "$WSFLEET_BIN" >>"$BENCH_OUT/wsfleet.log" 2>&1 </dev/null &
    SERVER_PID=$!
    wait_until 30 "wsfleet /readyz" ready || die "wsfleet not ready; see $BENCH_OUT/wsfleet.log"
}

stop_server() {
    stop "$SERVER_PID" wsfleet
    SERVER_PID=""
}

# loadtest NAME ARGS...: runs the load tester in the foreground with CPU sampling of the
# server and redis; its table goes to the terminal, its JSON to $BENCH_OUT/NAME.json.
loadtest() {
    local name=$1
    shift
    local cmd=("$LOADTEST" "$@" --url "$URL" --timeout 300s
        --sample-pid "server=$SERVER_PID" --sample-pid "redis=$REDIS_PID"
        --json "$BENCH_OUT/$name.json")
    say "\$ ${cmd[*]}"
    # Exit 2 (some errors) still leaves a report worth reading; 1 (wrong counts) and 3
    # (could not start) end the benchmark.
    local rc=0
    "${cmd[@]}" || rc=$?
    [ "$rc" -le 2 ] || die "wsfleet-loadtest failed (exit $rc)"
    [ "$rc" -ne 1 ] || die "count violations: the server skipped or repeated a number"
}

# server_histogram FILE_BEFORE FILE_AFTER: the server's own message-handling time
# (wsfleet_message_handling_seconds, Redis round trip included) between two /metrics
# snapshots, as the bucket bound each quantile falls under.
server_histogram() {
    join <(bucket_counts "$1") <(bucket_counts "$2") | sort -g | awk '
        { le[NR] = $1; n[NR] = $3 - $2 }
        END {
            split("0.50 0.99", q, " ")
            for (i = 1; i <= 2; i++)
                for (j = 1; j <= NR; j++)
                    if (n[j] >= q[i] * n[NR]) { printf "p%g <= %g ms  ", q[i] * 100, le[j] * 1000; break }
            printf "(%d messages)\n", n[NR]
        }'
}
bucket_counts() {
    sed -n 's/^wsfleet_message_handling_seconds_bucket{le="\([^"]*\)"} \([0-9]*\).*/\1 \2/p' "$1" |
        sed 's/^+Inf /inf /' | sort -k1,1
}
# cpu_of JSON: "server 113%, redis 25%, …" from a report, in percent of one core.
cpu_of() { jq -r '[.cpu[] | "\(.name) \(.percent_of_one_core | floor)%"] | join(", ")' "$1"; }
metrics() { curl -fsS -m 5 "http://127.0.0.1:$BENCH_PORT/metrics" >"$1"; }

# verdict VALUE OP TARGET: "met" or "NOT met".
verdict() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        ok = (op == ">=") ? v >= t : (op == "<") ? v < t : v <= t
        print ok ? "met" : "NOT met"
    }'
}

bench_throughput() {
    step "1. throughput: closed loop, $BENCH_SOCKETS sockets x $BENCH_MESSAGES messages"
    wait_for_quiet
    metrics "$BENCH_OUT/throughput.metrics.before"
    loadtest throughput closed-loop --connections "$BENCH_SOCKETS" --messages "$BENCH_MESSAGES"
    metrics "$BENCH_OUT/throughput.metrics.after"
    say "server-side handling: $(server_histogram "$BENCH_OUT"/throughput.metrics.{before,after})"
    local j="$BENCH_OUT/throughput.json" rate p50 p99
    rate="$(jq -r '.messages.per_second | floor' "$j")"
    p50="$(jq -r '.latency_ms.p50' "$j")"
    p99="$(jq -r '.latency_ms.p99' "$j")"
    RESULTS+=("throughput  $rate msg/s (p50 $p50 ms, p99 $p99 ms)   target >= 40000 msg/s: $(verdict "$rate" '>=' 40000)")
    RESULTS+=("            cpu (% of one core): $(cpu_of "$j")")
}

bench_latency() {
    step "2. latency: open loop, $BENCH_SOCKETS sockets x $BENCH_RATE msg/s for $BENCH_DURATION"
    wait_for_quiet
    metrics "$BENCH_OUT/latency.metrics.before"
    loadtest latency open-loop --connections "$BENCH_SOCKETS" --rate "$BENCH_RATE" --duration "$BENCH_DURATION"
    metrics "$BENCH_OUT/latency.metrics.after"
    say "server-side handling: $(server_histogram "$BENCH_OUT"/latency.metrics.{before,after})"
    local j="$BENCH_OUT/latency.json" p50 p99
    p50="$(jq -r '.latency_ms.p50' "$j")"
    p99="$(jq -r '.latency_ms.p99' "$j")"
    RESULTS+=("latency     p99 $p99 ms (p50 $p50 ms) at $BENCH_SOCKETS x $BENCH_RATE msg/s   target p99 < 5 ms: $(verdict "$p99" '<' 5)")
    RESULTS+=("            cpu (% of one core): $(cpu_of "$j")")
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
active() { curl -fsS -m 2 "http://127.0.0.1:$BENCH_PORT/metrics" | awk '/^wsfleet_connections_active / { print $2 }'; }
all_open() { [ "$(active)" = "$BENCH_IDLE_SOCKETS" ]; }

# bench_memory WARMUP: server RSS per idle socket; WARMUP counted messages per socket first.
# 0 is a socket that never spoke; 1 also counts what handling a message leaves behind.
bench_memory() {
    local warmup=$1 name="memory-warmup$1"
    step "3. memory: $BENCH_IDLE_SOCKETS idle sockets held for $BENCH_HOLD after $warmup message(s) each, on a fresh server"
    stop_server
    start_server
    wait_for_quiet
    local before peak=0 client=0 rss
    before="$(rss_kib "$SERVER_PID")"
    say "server RSS before: $before KiB"
    "$LOADTEST" hold --connections "$BENCH_IDLE_SOCKETS" --duration "$BENCH_HOLD" \
        --warmup-messages "$warmup" --url "$URL" \
        --timeout 300s --sample-pid "server=$SERVER_PID" --sample-pid "redis=$REDIS_PID" \
        --json "$BENCH_OUT/$name.json" &
    LOADTEST_PID=$!
    say "\$ $LOADTEST hold --connections $BENCH_IDLE_SOCKETS --duration $BENCH_HOLD --warmup-messages $warmup --url $URL (pid $LOADTEST_PID)"
    wait_until 120 "$BENCH_IDLE_SOCKETS connections on the server" all_open ||
        say "warning: the server never held all $BENCH_IDLE_SOCKETS sockets at once"
    # Peak while all sockets are open: heartbeats (every 5 s) go to all of them meanwhile,
    # so their write paths are exercised and counted too.
    while ! gone "$LOADTEST_PID" && all_open; do
        rss="$(rss_kib "$SERVER_PID")"
        [ "$rss" -gt "$peak" ] && peak=$rss
        rss="$(rss_kib "$LOADTEST_PID")"
        [ "$rss" -gt "$client" ] && client=$rss
        sleep 0.5
    done
    local rc=0
    wait "$LOADTEST_PID" || rc=$?
    LOADTEST_PID=""
    [ "$rc" -le 2 ] || die "wsfleet-loadtest hold failed (exit $rc)"
    local per_socket
    per_socket="$(awk -v a="$peak" -v b="$before" -v n="$BENCH_IDLE_SOCKETS" 'BEGIN { printf "%.1f", (a - b) / n }')"
    say "server RSS with $BENCH_IDLE_SOCKETS sockets open (peak): $peak KiB; load tester: $client KiB"
    RESULTS+=("memory      server +$per_socket KiB per idle socket, $warmup message(s) each before ($before -> $peak KiB for $BENCH_IDLE_SOCKETS)   target <= 12 KiB: $(verdict "$per_socket" '<=' 12)")
}

mkdir -p "$BENCH_OUT"
step "building wsfleet and wsfleet-loadtest (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p wsfleet -p wsfleet-loadtest
say "source: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo ' + uncommitted changes in src/')"
say "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); client, server and redis share them"
start_redis
start_server
case "$WHAT" in
throughput) bench_throughput ;;
latency) bench_latency ;;
memory)
    bench_memory 0
    bench_memory 1
    ;;
all)
    bench_throughput
    bench_latency
    bench_memory 0
    bench_memory 1
    ;;
esac

step "results (reports in $BENCH_OUT)"
printf '%s\n' "${RESULTS[@]}"
