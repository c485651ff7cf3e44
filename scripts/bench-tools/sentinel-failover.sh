#!/usr/bin/env bash
# A Sentinel failover under a closed loop (docs/BENCHMARKS.md, "A Sentinel failover under load"):
# a primary, a replica and three Sentinels (quorum 2, down-after-milliseconds DOWN_AFTER_MS), one
# wsfleet instance on redis-sentinel://, CONNECTIONS sockets × MESSAGES in a closed loop; 3 s in,
# the primary is SIGKILLed, and restarted once a replica is promoted (Sentinel makes it a
# replica of the new primary, so that REDIS_WAIT_REPLICAS=1 can be met again).
#
#   bash scripts/bench-tools/sentinel-failover.sh [WAIT] [CONNECTIONS] [MESSAGES]
#     WAIT=1 (REDIS_WAIT_REPLICAS) CONNECTIONS=1000 MESSAGES=300; DOWN_AFTER_MS=1000
#     release binaries in target/release (cargo build --release -p wsfleet -p wsfleet-loadtest)
#
# Prints the load tester's disruption section (counts lost and repeated, reconnects), the frames
# answered `unavailable`, and how long /readyz answered 503 (the unavailability window).
# Everything runs on free loopback ports and is stopped by pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
wait_replicas=${1:-1} connections=${2:-1000} messages=${3:-300}
: "${DOWN_AFTER_MS:=1000}"
# shellcheck source=scripts/bench-tools/lib-tools.sh
. scripts/bench-tools/lib-tools.sh
need_tools redis-server redis-cli python3 jq curl
need_release wsfleet wsfleet-loadtest
redis() { # NAME PORT ARGS...: a redis-server in the background, its pid in $dir/NAME.pid
    local name=$1 port=$2
    shift 2
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$dir" \
        --dbfilename "$name.rdb" "$@" >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    disown # killed by the fault script: no "Killed" notice from this shell
}
primary=$(free_port) replica=$(free_port) app=$(free_port)
redis primary "$primary"
redis replica "$replica" --replicaof 127.0.0.1 "$primary"
until redis-cli -p "$replica" info replication 2>/dev/null | grep -q master_link_status:up; do sleep 0.1; done
sentinels=()
for i in 1 2 3; do
    port=$(free_port)
    sentinels+=("$port")
    printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor wsfleet 127.0.0.1 %s 2\nsentinel down-after-milliseconds wsfleet %s\nsentinel failover-timeout wsfleet 10000\n' \
        "$port" "$dir" "$primary" "$DOWN_AFTER_MS" >"$dir/sentinel$i.conf"
    redis-server "$dir/sentinel$i.conf" --sentinel >"$dir/sentinel$i.log" 2>&1 &
    echo $! >"$dir/sentinel$i.pid"
done
until redis-cli -p "${sentinels[0]}" sentinel replicas wsfleet 2>/dev/null | grep -q "$replica"; do sleep 0.1; done

url="redis-sentinel://127.0.0.1:${sentinels[0]}?node=127.0.0.1:${sentinels[1]}&node=127.0.0.1:${sentinels[2]}&sentinelServiceName=wsfleet"
REDIS_URL="$url" BIND_ADDR="127.0.0.1:$app" RATE_LIMIT=0 RUST_LOG=warn \
    REDIS_WAIT_REPLICAS="$wait_replicas" target/release/wsfleet >"$dir/server.log" 2>&1 &
echo $! >"$dir/server.pid"
until curl -fs "http://127.0.0.1:$app/readyz" >/dev/null 2>&1; do sleep 0.05; done

# The fault: SIGKILL the primary, note how long /readyz is 503, restart the old primary once
# Sentinel names the replica.
cat >"$dir/fault.sh" <<FAULT
set -eu
kill -9 "\$(cat $dir/primary.pid)"
start=\$(date +%s%N)
unready=0
while [ "\$(redis-cli -p ${sentinels[0]} sentinel get-master-addr-by-name wsfleet | sed -n 2p)" != "$replica" ]; do
    curl -fs "http://127.0.0.1:$app/readyz" >/dev/null 2>&1 || unready=\$(( (\$(date +%s%N) - start) / 1000000 ))
    sleep 0.05
done
promoted=\$(( (\$(date +%s%N) - start) / 1000000 ))
redis-server --bind 127.0.0.1 --port $primary --save "" --appendonly no --dir $dir --dbfilename primary.rdb >>$dir/primary.log 2>&1 &
echo \$! >$dir/primary.pid
until curl -fs "http://127.0.0.1:$app/readyz" >/dev/null 2>&1; do sleep 0.05; done
ready=\$(( (\$(date +%s%N) - start) / 1000000 ))
echo "promoted after \${promoted} ms; /readyz 200 again after \${ready} ms (last 503 seen at \${unready} ms)" >$dir/fault.out
FAULT
closed_loop_through_fault sh "$app" "$connections" "$messages" "REDIS_WAIT_REPLICAS=$wait_replicas, $connections sockets x $messages, down-after ${DOWN_AFTER_MS} ms"
