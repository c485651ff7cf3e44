#!/usr/bin/env bash
# Closed-loop throughput on a 3-primary Redis Cluster against one Redis, on the same machine
# (docs/BENCHMARKS.md, "Redis Cluster"): one wsfleet instance per run, REDIS_URL a single
# redis-server or a redis-cluster:// of 3 primaries (no replicas), runs alternated.
#
#   bash scripts/bench-tools/cluster-ab.sh [CONNECTIONS] [MESSAGES] [PAIRS]
#     CONNECTIONS=1000 MESSAGES=200 PAIRS=3; release binaries in target/release (cargo build
#     --release -p wsfleet -p wsfleet-loadtest first)
#
# Prints one line per run (msg/s, p50, p99, script calls: one per batch on one Redis, one per
# node of a batch on the cluster), then the medians and the ratio cluster / single. Everything
# runs on free loopback ports and is stopped by pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
connections=${1:-1000} messages=${2:-200} pairs=${3:-3}
# shellcheck source=scripts/bench-tools/lib-tools.sh
. scripts/bench-tools/lib-tools.sh
need_tools redis-server redis-cli python3 jq curl
need_release wsfleet wsfleet-loadtest
# shellcheck source=scripts/bench-tools/lib-cluster.sh
. scripts/bench-tools/lib-cluster.sh

start_single
start_cluster 3 0

calls() { # PORTS...: EVALSHA calls since the last resetstat, summed
    local total=0 c port
    for port in "$@"; do
        c=$(redis-cli -p "$port" info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p')
        total=$((total + ${c:-0}))
    done
    echo "$total"
}

run() { # NAME URL PORTS...
    local name=$1 url=$2 port pid
    shift 2
    port=$(free_port)
    REDIS_URL="$url" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT=0 RUST_LOG=warn \
        target/release/wsfleet >"$dir/server.log" 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.05; done
    for p in "$@"; do redis-cli -p "$p" config resetstat >/dev/null; done
    target/release/wsfleet-loadtest closed-loop --url "ws://127.0.0.1:$port/ws/chat/" \
        -n "$connections" -m "$messages" --no-progress --json "$dir/r.json" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    jq -r '.messages.per_second | floor' "$dir/r.json" >>"$dir/$name.rates"
    jq -r --arg name "$name" --arg calls "$(calls "$@")" \
        '"\($name): \(.messages.per_second | floor) msg/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, \(.messages.unavailable) unavailable, \(.count_violations) violations, \($calls) script calls"' "$dir/r.json"
}
# shellcheck disable=SC2086 # CLUSTER_PORTS is a list
for _ in $(seq "$pairs"); do
    run single "redis://127.0.0.1:$single" "$single"
    run cluster "$CLUSTER_URL" $CLUSTER_PORTS
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
s=$(median "$dir/single.rates") c=$(median "$dir/cluster.rates")
echo "median: single Redis $s msg/s, 3-primary cluster $c msg/s, ratio cluster/single $(awk -v c="$c" -v s="$s" 'BEGIN {printf "%.2f", c / s}')"
