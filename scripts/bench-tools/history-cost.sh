#!/usr/bin/env bash
# What the broadcast history costs (issue 12, docs/BENCHMARKS.md "History and recovery"):
# publish throughput with HISTORY_SIZE=1000 against HISTORY_SIZE=0 on one Redis, Redis memory
# per retained publication, and the time to replay 1000 missed broadcasts to one client.
#
#   bash scripts/bench-tools/history-cost.sh [ROUNDS=3]
#
# Release build; its own redis-server and two instances on free loopback ports, stopped by pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-3}
# shellcheck source=scripts/bench-tools/lib-tools.sh
. scripts/bench-tools/lib-tools.sh
need_tools redis-server redis-cli python3 curl
cargo build --release --quiet --bin wsfleet
cargo build --release --quiet -p wsfleet-loadtest --example history_cost
redis_port=$(free_port) with_port=$(free_port) without_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" >/dev/null
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
start() { # PORT HISTORY_SIZE
    BIND_ADDR="127.0.0.1:$1" REDIS_URL="redis://127.0.0.1:$redis_port" BROADCAST_TOKEN=bench \
        HISTORY_SIZE="$2" RATE_LIMIT=0 LOG_FORMAT=json target/release/wsfleet >"$dir/node-$1.log" 2>&1 &
    pids+=("$!")
}
start "$with_port" 1000
start "$without_port" 0
for port in "$with_port" "$without_port"; do
    until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.1; done
done
target/release/examples/history_cost "http://127.0.0.1:$with_port" "http://127.0.0.1:$without_port" \
    "ws://127.0.0.1:$with_port/ws/chat/" bench "127.0.0.1:$redis_port" "$rounds"
