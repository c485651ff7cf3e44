#!/usr/bin/env bash
# What REDIS_WAIT_REPLICAS=1 costs: a closed loop against one wsfleet instance on a primary with
# one replica, REDIS_WAIT_REPLICAS=0 and =1 alternated (docs/BENCHMARKS.md,
# "REDIS_WAIT_REPLICAS: what waiting for a replica costs").
#
#   bash scripts/bench-tools/wait-replicas-ab.sh [CONNECTIONS] [MESSAGES] [PAIRS]
#     CONNECTIONS=1000 MESSAGES=200 PAIRS=3; release binaries in target/release (cargo build
#     --release -p wsfleet -p wsfleet-loadtest first)
#
# Starts its own redis-server primary and replica and one wsfleet per run on free loopback
# ports, and stops each by pid. Prints one line per run: msg/s, p50 and p99 latency.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
connections=${1:-1000} messages=${2:-200} pairs=${3:-3}
# shellcheck source=scripts/bench-tools/lib-tools.sh
. scripts/bench-tools/lib-tools.sh
need_tools redis-server redis-cli python3 jq
need_release wsfleet wsfleet-loadtest
primary=$(free_port) replica=$(free_port)
redis-server --bind 127.0.0.1 --port "$primary" --save "" --appendonly no --dir "$dir" --dbfilename p.rdb >/dev/null &
pids+=($!)
redis-server --bind 127.0.0.1 --port "$replica" --save "" --appendonly no --dir "$dir" --dbfilename r.rdb \
    --replicaof 127.0.0.1 "$primary" >/dev/null &
pids+=($!)
until redis-cli -p "$replica" info replication 2>/dev/null | grep -q master_link_status:up; do sleep 0.1; done

run() { # WAIT
    local port pid
    port=$(free_port)
    REDIS_URL="redis://127.0.0.1:$primary" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT=0 RUST_LOG=warn \
        REDIS_WAIT_REPLICAS="$1" target/release/wsfleet >"$dir/server.log" 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.05; done
    redis-cli -p "$primary" config resetstat >/dev/null
    target/release/wsfleet-loadtest closed-loop --url "ws://127.0.0.1:$port/ws/chat/" \
        -n "$connections" -m "$messages" --no-progress --json "$dir/r.json" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    # Script calls (one per batch) and WAITs since the reset: messages per batch.
    local calls waits
    calls=$(redis-cli -p "$primary" info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p')
    waits=$(redis-cli -p "$primary" info commandstats | sed -n 's/^cmdstat_wait:calls=\([0-9]*\).*/\1/p')
    jq -r --arg w "$1" --arg calls "${calls:-0}" --arg waits "${waits:-0}" \
        '"REDIS_WAIT_REPLICAS=\($w): \(.messages.per_second | floor) msg/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, \(.messages.unavailable) unavailable, \(.count_violations) violations, \($calls) batches, \($waits) WAITs"' "$dir/r.json"
}
for _ in $(seq "$pairs"); do
    run 0
    run 1
done
