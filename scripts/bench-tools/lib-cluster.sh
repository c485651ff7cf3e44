#!/usr/bin/env bash
# shellcheck disable=SC2154,SC2034 # $dir is the caller's; CLUSTER_URL and CLUSTER_PORTS are for it
# Shared by cluster-ab.sh, cluster-failover.sh and cluster-rooms.sh: a local Redis Cluster on
# free loopback ports. Source it after lib-tools.sh (its $dir and free_port); every server's pid
# goes to $dir/<name>.pid, which lib-tools.sh stops at exit.

# cluster_server NAME PORT: one cluster-enabled redis-server (bus port of its own, node timeout
# NODE_TIMEOUT_MS, nothing saved) in the background.
cluster_server() {
    local name=$1 port=$2
    mkdir -p "$dir/$name"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$dir/$name" \
        --cluster-enabled yes --cluster-config-file "$dir/$name/nodes.conf" \
        --cluster-port "$(free_port)" --cluster-node-timeout "${NODE_TIMEOUT_MS:-1000}" \
        >>"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    disown # may be killed by a fault script: no "Killed" notice from this shell
    echo "$port" >"$dir/$name.port"
}

# start_single: one plain redis-server to compare the cluster with; its port in $single.
start_single() {
    single=$(free_port)
    redis-server --bind 127.0.0.1 --port "$single" --save "" --appendonly no --dir "$dir" >"$dir/single.log" 2>&1 &
    echo $! >"$dir/single.pid"
    until redis-cli -p "$single" ping 2>/dev/null | grep -q PONG; do sleep 0.05; done
}

# start_cluster PRIMARIES REPLICAS_PER_PRIMARY: servers node1…nodeN, the cluster created, and
# waits until every server says cluster_state:ok. Sets CLUSTER_URL (fred's form) and
# CLUSTER_PORTS (space-separated).
start_cluster() {
    local primaries=$1 replicas=$2 n i port
    n=$((primaries * (1 + replicas)))
    CLUSTER_PORTS=""
    for i in $(seq "$n"); do
        port=$(free_port)
        cluster_server "node$i" "$port"
        CLUSTER_PORTS="$CLUSTER_PORTS $port"
    done
    for port in $CLUSTER_PORTS; do
        until redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; do sleep 0.05; done
    done
    local addresses=()
    for port in $CLUSTER_PORTS; do addresses+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas "$replicas" --cluster-yes >"$dir/create.log" 2>&1
    for port in $CLUSTER_PORTS; do
        until redis-cli -p "$port" cluster info 2>/dev/null | grep -q cluster_state:ok &&
            redis-cli -p "$port" info replication | grep -Eq 'role:master|master_link_status:up'; do
            sleep 0.1
        done
    done
    local first rest=""
    first=$(echo "$CLUSTER_PORTS" | awk '{print $1}')
    for port in $(echo "$CLUSTER_PORTS" | awk '{print $2, $3}'); do rest="$rest&node=127.0.0.1:$port"; done
    CLUSTER_URL="redis-cluster://127.0.0.1:$first?${rest#&}"
}

# primary_of_key KEY: the port of the primary serving KEY's slot now.
primary_of_key() {
    local port slot="" owner
    # Any live server answers; the killed one (maybe the first) does not.
    for port in $CLUSTER_PORTS; do
        slot=$(redis-cli -p "$port" cluster keyslot "$1" 2>/dev/null) && [ -n "$slot" ] && break
    done
    for port in $CLUSTER_PORTS; do
        owner=$(redis-cli -p "$port" cluster nodes 2>/dev/null | awk -v slot="$slot" '
            $3 ~ /master/ && $3 !~ /fail/ {
                for (i = 9; i <= NF; i++) {
                    n = split($i, r, "-"); lo = r[1]; hi = (n == 2) ? r[2] : r[1]
                    if (slot + 0 >= lo + 0 && slot + 0 <= hi + 0) { split($2, a, "[:@]"); print a[2]; exit }
                }
            }')
        if [ -n "$owner" ]; then
            echo "$owner"
            return 0
        fi
    done
}
