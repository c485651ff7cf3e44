#!/usr/bin/env bash
# A Redis Cluster primary SIGKILLed under a closed loop (docs/BENCHMARKS.md, "A cluster
# failover under load"): 3 primaries and 3 replicas (cluster-node-timeout NODE_TIMEOUT_MS), one
# wsfleet instance on redis-cluster://, CONNECTIONS sockets × MESSAGES in a closed loop; 3 s in,
# the primary of one slot is SIGKILLed, and restarted (same nodes.conf: it rejoins as the
# replica of the promoted one, so that REDIS_WAIT_REPLICAS=1 can be met again) once its
# replica has taken over. A third of the sessions live on that primary's slots.
#
#   bash scripts/bench-tools/cluster-failover.sh [WAIT] [CONNECTIONS] [MESSAGES]
#     WAIT=1 (REDIS_WAIT_REPLICAS) CONNECTIONS=1000 MESSAGES=300; NODE_TIMEOUT_MS=1000
#     release binaries in target/release (cargo build --release -p wsfleet -p wsfleet-loadtest)
#
# Prints the load tester's disruption section (counts lost and repeated, reconnects), the frames
# answered `unavailable`, and how long /readyz answered 503 (the unavailability window).
# Everything runs on free loopback ports and is stopped by pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
wait_replicas=${1:-1} connections=${2:-1000} messages=${3:-300}
: "${NODE_TIMEOUT_MS:=1000}"
# shellcheck source=scripts/bench-tools/lib-tools.sh
. scripts/bench-tools/lib-tools.sh
need_tools redis-server redis-cli python3 jq curl
need_release wsfleet wsfleet-loadtest
# shellcheck source=scripts/bench-tools/lib-cluster.sh
. scripts/bench-tools/lib-cluster.sh
start_cluster 3 1

app=$(free_port)
REDIS_URL="$CLUSTER_URL" BIND_ADDR="127.0.0.1:$app" RATE_LIMIT=0 RUST_LOG=warn \
    REDIS_WAIT_REPLICAS="$wait_replicas" target/release/wsfleet >"$dir/server.log" 2>&1 &
echo $! >"$dir/server.pid"
until curl -fs "http://127.0.0.1:$app/readyz" >/dev/null 2>&1; do sleep 0.05; done

# The victim: the primary serving the slot of the tag {06S} (any would do: a third of the
# sessions are on it).
victim=$(primary_of_key "{06S}")
name=$(grep -lx "$victim" "$dir"/node*.port | xargs basename | sed 's/\.port$//')
cat >"$dir/fault.sh" <<FAULT
set -eu
. scripts/bench-tools/lib-cluster.sh
dir=$dir CLUSTER_PORTS="$CLUSTER_PORTS"
kill -9 "\$(cat $dir/$name.pid)"
start=\$(date +%s%N)
unready=0
while [ "\$(primary_of_key '{06S}')" = "$victim" ] || [ -z "\$(primary_of_key '{06S}')" ]; do
    curl -fs "http://127.0.0.1:$app/readyz" >/dev/null 2>&1 || unready=\$(( (\$(date +%s%N) - start) / 1000000 ))
    sleep 0.05
done
promoted=\$(( (\$(date +%s%N) - start) / 1000000 ))
cluster_server $name $victim
until curl -fs "http://127.0.0.1:$app/readyz" >/dev/null 2>&1; do sleep 0.05; done
ready=\$(( (\$(date +%s%N) - start) / 1000000 ))
echo "replica promoted after \${promoted} ms; /readyz 200 again after \${ready} ms (last 503 seen at \${unready} ms)" >$dir/fault.out
FAULT
closed_loop_through_fault bash "$app" "$connections" "$messages" "REDIS_WAIT_REPLICAS=$wait_replicas, $connections sockets x $messages, cluster-node-timeout ${NODE_TIMEOUT_MS} ms, primary :$victim killed"
