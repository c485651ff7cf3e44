#!/usr/bin/env bash
# Room fan-out on sharded pub/sub (docs/BENCHMARKS.md, "Redis Cluster"): the same rooms workload
# through two wsfleet instances on one Redis and on a 3-primary Redis Cluster (no replicas), runs
# alternated. Each room's script and SPUBLISH go to the primary of its slot, and each instance
# holds an SSUBSCRIBE per room it has members in on that primary.
#
#   bash scripts/bench-tools/cluster-rooms.sh [ROOMS] [MEMBERS] [RATE] [SECONDS] [PAIRS]
#     ROOMS=100 MEMBERS=10 RATE=5 (publications/s per room) SECONDS=20 PAIRS=2; release binaries
#     in target/release (cargo build --release -p wsfleet -p wsfleet-loadtest first)
#
# Prints one line per run (deliveries and their check, p50 / p99 publish → deliver, SPUBLISH
# calls per Redis server: how the rooms spread over the shards), then the medians of p99.
# Everything runs on free loopback ports and is stopped by pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rooms=${1:-100} members=${2:-10} rate=${3:-5} seconds=${4:-20} pairs=${5:-2}
# shellcheck source=scripts/bench-tools/lib-tools.sh
. scripts/bench-tools/lib-tools.sh
need_tools redis-server redis-cli python3 jq curl
need_release wsfleet wsfleet-loadtest
# shellcheck source=scripts/bench-tools/lib-cluster.sh
. scripts/bench-tools/lib-cluster.sh

start_single
start_cluster 3 0

spublishes() { # PORTS...: SPUBLISH calls per server since the last resetstat, "a / b / c"
    local out=() c port
    for port in "$@"; do
        c=$(redis-cli -p "$port" info commandstats | sed -n 's/^cmdstat_spublish:calls=\([0-9]*\).*/\1/p')
        out+=("${c:-0}")
    done
    local IFS=/
    echo "${out[*]}"
}

run() { # NAME URL PORTS...
    local name=$1 url=$2 i port pids=() urls=()
    shift 2
    for i in 1 2; do
        port=$(free_port)
        REDIS_URL="$url" BIND_ADDR="127.0.0.1:$port" RATE_LIMIT=0 RUST_LOG=warn \
            target/release/wsfleet >"$dir/server-$i.log" 2>&1 &
        pids+=($!)
        echo $! >"$dir/server-$i.pid"
        urls+=(--url "ws://127.0.0.1:$port/ws/chat/")
        until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.05; done
    done
    for p in "$@"; do redis-cli -p "$p" config resetstat >/dev/null; done
    target/release/wsfleet-loadtest rooms "${urls[@]}" --rooms "$rooms" --members "$members" \
        --rate "$rate" --duration "${seconds}s" --room-prefix "$name-$RANDOM" --no-progress \
        --json "$dir/r.json" >/dev/null || true
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    jq -r '.latency_ms.p99' "$dir/r.json" >>"$dir/$name.p99"
    jq -r --arg name "$name" --arg calls "$(spublishes "$@")" \
        '"\($name): \(.rooms.deliveries) / \(.rooms.expected_deliveries) deliveries (lost \(.rooms.lost), dup \(.rooms.duplicated), out of order \(.rooms.out_of_order)), \(.rooms.deliveries_per_second | floor)/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, SPUBLISH per server \($calls)"' "$dir/r.json"
}
# shellcheck disable=SC2086 # CLUSTER_PORTS is a list
for _ in $(seq "$pairs"); do
    run single "redis://127.0.0.1:$single" "$single"
    run cluster "$CLUSTER_URL" $CLUSTER_PORTS
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median p99: single Redis $(median "$dir/single.p99") ms, 3-primary cluster $(median "$dir/cluster.p99") ms"
