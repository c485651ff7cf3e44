# shellcheck shell=bash
# make up REDIS=sentinel|cluster: a Redis topology on this machine, to try failover and sharding
# without a second host. Sourced by lib-redis.sh (after it: the durability and memory settings
# are the single redis-server's); never run. REDIS=single (the default) is lib-redis.sh alone.
#
#   REDIS=sentinel  a primary and a replica (server-1, server-2) and three Sentinels
#                   (sentinel-1..3, quorum 2, service name wsfleet, down-after 5 s): ports
#                   REDIS_PORT to REDIS_PORT+4. The instances get
#                   redis-sentinel://127.0.0.1:S1?node=127.0.0.1:S2&node=…&sentinelServiceName=wsfleet
#   REDIS=cluster   six cluster nodes (node-1..6): three primaries with a replica each
#                   (redis-cli --cluster create --cluster-replicas 1), node timeout 5 s: ports
#                   REDIS_PORT to REDIS_PORT+5, their cluster bus ports right after them
#                   (REDIS_PORT+6 to +11, not Redis's usual 10000 above: one block of ports). The
#                   instances get redis-cluster://127.0.0.1:N1?node=127.0.0.1:N2&node=… (every node:
#                   any one of them is enough to learn the slot map).
#
# Run state (next to the single redis-server's, see lib.sh):
#   redis.topology                 the topology our Redis runs as (removed by make down)
#   redis-<name>.{pid,port,log}    each process (redis-server-1.pid, redis-sentinel-2.log, …)
#   redis-<topology>/<name>/       its configuration file and data (append-only file, dump,
#                                  nodes.conf). Each process is started from its file and
#                                  rewrites it itself: a replica that Sentinel promoted is still
#                                  the primary after make down and make up, and a cluster comes
#                                  back from its nodes.conf without being created again.
#   redis-<topology>/port          the first port, fixed once the topology holds data (its
#                                  files name the ports of its peers)

SENTINEL_SERVICE=wsfleet
REDIS_TOPOLOGY_FILE="$RUN_DIR/redis.topology"

# check_redis_topology: REDIS is single, sentinel or cluster, or die.
check_redis_topology() {
    case "$REDIS" in
    single | sentinel | cluster) ;;
    *) die "REDIS must be single, sentinel or cluster, got ${REDIS@Q}" ;;
    esac
}

# topology_names TOPOLOGY: its processes, one per line, Sentinels last.
topology_names() {
    case "$1" in
    sentinel) printf '%s\n' server-1 server-2 sentinel-1 sentinel-2 sentinel-3 ;;
    cluster) printf '%s\n' node-1 node-2 node-3 node-4 node-5 node-6 ;;
    esac
}

topology_dir() { printf '%s' "$RUN_DIR/redis-$REDIS"; }

# topology_base_port: the first port of the topology: the one its data was made with, else
# REDIS_PORT. Dies when REDIS_PORT was given and differs from the data's.
topology_base_port() {
    local recorded
    recorded="$(cat "$(topology_dir)/port" 2>/dev/null || true)"
    if [ -z "$recorded" ]; then
        printf '%s' "$REDIS_PORT"
    elif [ -n "$REDIS_PORT_GIVEN" ] && [ "$REDIS_PORT_GIVEN" != "$recorded" ]; then
        die "the $REDIS set in $(rel "$(topology_dir)")/ was made on ports from $recorded (its files name them): leave REDIS_PORT out, or remove that directory (its data) to make a new one on $REDIS_PORT"
    else
        printf '%s' "$recorded"
    fi
}

# topology_bus_port NAME: the cluster bus port of cluster node NAME (6 above its port).
topology_bus_port() { printf '%s' "$(($(topology_port "$1") + 6))"; }

# topology_ports: every port the topology listens on (cluster bus ports included), one a line.
topology_ports() {
    local name
    while IFS= read -r name; do
        topology_port "$name"
        echo
        if [ "$REDIS" = cluster ]; then
            topology_bus_port "$name"
            echo
        fi
    done < <(topology_names "$REDIS")
}

# topology_port NAME: the port of NAME (the n-th process of the topology, from the first port).
topology_port() {
    local base i=0 name
    base="$(topology_base_port)"
    while IFS= read -r name; do
        [ "$name" = "$1" ] && break
        i=$((i + 1))
    done < <(topology_names "$REDIS")
    printf '%s' "$((base + i))"
}

# redis_process_alive NAME: our process NAME runs (its title names its port).
redis_process_alive() {
    pid_alive "$RUN_DIR/redis-$1.pid" "redis-server 127.0.0.1:$(cat "$RUN_DIR/redis-$1.port" 2>/dev/null || echo '?')"
}

# topology_missing: the processes of the topology that do not run, one per line.
topology_missing() {
    local name
    while IFS= read -r name; do
        redis_process_alive "$name" || printf '%s\n' "$name"
    done < <(topology_names "$REDIS")
}

# rcli PORT ARGS...: redis-cli on 127.0.0.1:PORT, bounded in time, without the CRs.
rcli() {
    local port=$1
    shift
    timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null | tr -d '\r'
}

# info_field PORT SECTION FIELD: one field of INFO (or CLUSTER INFO with SECTION=cluster).
info_field() {
    local text
    if [ "$2" = cluster ]; then text="$(rcli "$1" cluster info)"; else text="$(rcli "$1" info "$2")"; fi
    sed -n "s/^$3://p" <<<"$text" | head -n 1
}

# topology_url: the REDIS_URL (fred's form) the instances get.
topology_url() {
    local names=() name first nodes=()
    if [ "$REDIS" = sentinel ]; then
        names=(sentinel-1 sentinel-2 sentinel-3)
    else
        mapfile -t names < <(topology_names "$REDIS")
    fi
    for name in "${names[@]}"; do nodes+=("127.0.0.1:$(topology_port "$name")"); done
    first=${nodes[0]}
    nodes=("${nodes[@]/#/node=}")
    if [ "$REDIS" = sentinel ]; then
        printf 'redis-sentinel://%s?%s&sentinelServiceName=%s' "$first" "$(IFS='&'; printf '%s' "${nodes[*]:1}")" "$SENTINEL_SERVICE"
    else
        printf 'redis-cluster://%s?%s' "$first" "$(IFS='&'; printf '%s' "${nodes[*]:1}")"
    fi
}

# topology_config NAME DIR PORT: writes NAME's configuration file, the first time only.
topology_config() {
    local name=$1 dir=$2 port=$3 conf
    conf="$dir/$([[ "$name" == sentinel-* ]] && echo sentinel || echo redis).conf"
    [ -s "$conf" ] && return 0
    mkdir -p "$dir"
    {
        printf 'bind 127.0.0.1\nport %s\ndir %s\ndaemonize no\nlogfile ""\n' "$port" "$dir"
        case "$name" in
        sentinel-*)
            printf 'sentinel monitor %s 127.0.0.1 %s 2\n' "$SENTINEL_SERVICE" "$(topology_port server-1)"
            printf 'sentinel down-after-milliseconds %s 5000\n' "$SENTINEL_SERVICE"
            printf 'sentinel failover-timeout %s 60000\n' "$SENTINEL_SERVICE"
            ;;
        *)
            # The single redis-server's durability and memory bound (lib-redis.sh).
            printf 'appendonly yes\nappendfsync everysec\nmaxmemory %s\nmaxmemory-policy volatile-lru\n' "$REDIS_MAXMEMORY"
            ;;
        esac
        if [ "$name" = server-2 ]; then printf 'replicaof 127.0.0.1 %s\n' "$(topology_port server-1)"; fi
        if [[ "$name" == node-* ]]; then
            printf 'cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 5000\n'
            printf 'cluster-port %s\n' "$(topology_bus_port "$name")"
        fi
    } >"$conf.tmp"
    mv -f "$conf.tmp" "$conf"
}

# topology_up: starts whatever of the topology is not running (creating it the first time),
# and waits until it is healthy; dies, showing the logs, if it does not get there.
topology_up() {
    local name port dir base missing=()
    check_redis_maxmemory
    topology_base_port >/dev/null # dies here, not in a subshell, when REDIS_PORT does not fit
    base="$(topology_base_port)"
    mapfile -t missing < <(topology_missing)
    local ports=()
    mapfile -t ports < <(topology_ports)
    [ "${ports[-1]}" -le 65535 ] || die "REDIS_PORT=$base is too high for our $REDIS: it needs ports up to $base+$((${#ports[@]} - 1))"
    for name in "${missing[@]}"; do
        for port in "$(topology_port "$name")" "$([ "$REDIS" = cluster ] && topology_bus_port "$name")"; do
            if [ -n "$port" ] && port_open "$port"; then
                die "127.0.0.1:$port (for our $REDIS's $name) is in use by a process make up did not start: set REDIS_PORT to the first of ${#ports[@]} free ports"
            fi
        done
    done
    dir="$(topology_dir)"
    mkdir -p "$dir"
    echo "$base" >"$dir/port"
    echo "$REDIS" >"$REDIS_TOPOLOGY_FILE"
    for name in "${missing[@]}"; do
        port="$(topology_port "$name")"
        topology_config "$name" "$dir/$name" "$port"
        step "starting redis-server $name on 127.0.0.1:$port ($REDIS; data and configuration in $(rel "$dir/$name")/)"
        echo "$port" >"$RUN_DIR/redis-$name.port"
        if [[ "$name" == sentinel-* ]]; then
            spawn "$RUN_DIR/redis-$name.log" "$RUN_DIR/redis-$name.pid" redis-server "$dir/$name/sentinel.conf" --sentinel
        else
            spawn "$RUN_DIR/redis-$name.log" "$RUN_DIR/redis-$name.pid" redis-server "$dir/$name/redis.conf"
        fi
    done
    # shellcheck disable=SC2317 # called by wait_until
    all_answer() {
        local n
        for n in "${missing[@]}"; do
            [ "$(rcli "$(topology_port "$n")" ping)" = PONG ] || return 1
        done
    }
    wait_until "$READY_TIMEOUT" "the $REDIS's processes to answer PING" all_answer || topology_failed
    if [ "$REDIS" = cluster ] && [ ! -f "$dir/created" ]; then
        cluster_create
    fi
    step "waiting until the $REDIS is healthy (up to ${READY_TIMEOUT}s)"
    wait_until "$READY_TIMEOUT" "the $REDIS to be healthy" topology_healthy || topology_failed
    say "$REDIS: $TOPOLOGY_HEALTH"
}

# cluster_create: one cluster of the six nodes, three primaries with a replica each.
cluster_create() {
    local nodes=() name
    while IFS= read -r name; do nodes+=("127.0.0.1:$(topology_port "$name")"); done < <(topology_names "$REDIS")
    step "creating the cluster: redis-cli --cluster create ${nodes[*]} --cluster-replicas 1"
    if ! timeout 60 redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
        >"$RUN_DIR/redis-cluster-create.log" 2>&1; then
        tail -n 20 "$RUN_DIR/redis-cluster-create.log" >&2
        die "redis-cli --cluster create failed (above; a node holding data of an earlier cluster refuses: make down, then remove $(rel "$(topology_dir)")/ to start afresh)"
    fi
    touch "$(topology_dir)/created"
}

# topology_failed: the last lines of every process's log, then die.
topology_failed() {
    local name
    while IFS= read -r name; do
        say "--- $(rel "$RUN_DIR/redis-$name.log") (last lines) ---" >&2
        tail -n 5 "$RUN_DIR/redis-$name.log" >&2 2>/dev/null || true
    done < <(topology_names "$REDIS")
    die "our $REDIS did not become healthy: $TOPOLOGY_HEALTH (logs above; make down stops what did start)"
}

# topology_healthy: whether the topology is whole and works, with why in TOPOLOGY_HEALTH.
#   sentinel: every process runs, every Sentinel names the same primary, which is one, a
#             replica is linked to it, and the Sentinels can reach their quorum (CKQUORUM);
#   cluster:  every node runs, cluster_state:ok with all 16384 slots served by three
#             primaries, and each of them has a linked replica.
TOPOLOGY_HEALTH=""
topology_healthy() {
    local missing=()
    mapfile -t missing < <(topology_missing 2>/dev/null)
    if [ "$REDIS" = sentinel ]; then sentinel_healthy "${missing[@]}"; else cluster_healthy "${missing[@]}"; fi
}

sentinel_healthy() {
    local name port primary="" named replicas quorum
    for name in sentinel-1 sentinel-2 sentinel-3; do
        port="$(topology_port "$name")"
        named="$(rcli "$port" sentinel get-master-addr-by-name "$SENTINEL_SERVICE" | paste -sd: -)"
        [ -n "$named" ] || continue
        if [ -z "$primary" ]; then
            primary=$named
        elif [ "$named" != "$primary" ]; then
            TOPOLOGY_HEALTH="DEGRADED: the Sentinels disagree on the primary ($primary, $named)"
            return 1
        fi
    done
    if [ -z "$primary" ]; then
        TOPOLOGY_HEALTH="DOWN: no Sentinel answers (no primary known)"
        return 1
    fi
    if [ "$(info_field "${primary#*:}" replication role)" != master ]; then
        TOPOLOGY_HEALTH="DOWN: the primary the Sentinels name, $primary, does not answer as one (a failover may be under way)"
        return 1
    fi
    # Linked: in sync and streaming (state=online), not merely connected.
    replicas="$(rcli "${primary#*:}" info replication | grep -c '^slave[0-9]*:.*state=online' || true)"
    quorum="$(rcli "$(topology_port sentinel-1)" sentinel ckquorum "$SENTINEL_SERVICE")"
    if [ "$#" -gt 0 ]; then
        TOPOLOGY_HEALTH="DEGRADED: not running: $*; primary $primary"
    elif [ "${replicas:-0}" -lt 1 ]; then
        TOPOLOGY_HEALTH="DEGRADED: primary $primary has no linked replica"
    elif [[ "$quorum" != OK* ]]; then
        TOPOLOGY_HEALTH="DEGRADED: primary $primary; the Sentinels cannot fail over yet (${quorum:-no answer})"
    else
        TOPOLOGY_HEALTH="healthy: primary $primary with $replicas linked replica(s), 3 Sentinels agree, quorum reachable"
        return 0
    fi
    return 1
}

cluster_healthy() {
    local name port state="" slots="" size="" primaries=0 unreplicated=0
    while IFS= read -r name; do
        port="$(topology_port "$name")"
        [ -n "$state" ] || state="$(info_field "$port" cluster cluster_state)"
        [ -n "$slots" ] || slots="$(info_field "$port" cluster cluster_slots_ok)"
        [ -n "$size" ] || size="$(info_field "$port" cluster cluster_size)"
        if [ "$(info_field "$port" replication role)" = master ]; then
            primaries=$((primaries + 1))
            rcli "$port" info replication | grep -q '^slave[0-9]*:.*state=online' ||
                unreplicated=$((unreplicated + 1))
        fi
    done < <(topology_names "$REDIS")
    if [ "$state" != ok ]; then
        TOPOLOGY_HEALTH="DOWN: cluster_state:${state:-no node answers}${slots:+, $slots slots served}"
        return 1
    fi
    if [ "$#" -gt 0 ]; then
        TOPOLOGY_HEALTH="DEGRADED: not running: $*; cluster_state:ok, $slots slots served by $size primaries"
    elif [ "$slots" != 16384 ] || [ "$size" != 3 ]; then
        TOPOLOGY_HEALTH="DEGRADED: $slots of 16384 slots served, by $size primaries"
    elif [ "$unreplicated" -gt 0 ]; then
        TOPOLOGY_HEALTH="DEGRADED: $unreplicated of $primaries primaries without a linked replica"
    else
        TOPOLOGY_HEALTH="healthy: cluster_state:ok, 16384 slots on 3 primaries, each with a linked replica"
        return 0
    fi
    return 1
}

# topology_lines: one line per process for make status (name, pid, address, role).
topology_lines() {
    local name port pid role
    while IFS= read -r name; do
        port="$(topology_port "$name")"
        if redis_process_alive "$name" 2>/dev/null; then
            pid="$(<"$RUN_DIR/redis-$name.pid")"
            case "$name" in
            sentinel-*) role="sentinel" ;;
            *)
                role="$(info_field "$port" replication role)"
                case "$role" in
                master) role=primary ;;
                slave) role="replica of $(info_field "$port" replication master_host):$(info_field "$port" replication master_port), link $(info_field "$port" replication master_link_status)" ;;
                *) role="not answering" ;;
                esac
                ;;
            esac
        else
            pid="-" role="not running"
        fi
        printf '        %-10s %-8s 127.0.0.1:%-6s %s\n' "$name" "$pid" "$port" "$role"
    done < <(topology_names "$REDIS")
}

# topology_stop: stops every Redis process of ours of any topology (the pid files say which),
# Sentinels first (so that none fails over a primary that is only being stopped), then the
# servers together: SIGTERM (each saves its data), SIGKILL after 15 s. How many it stopped:
# TOPOLOGY_STOPPED.
TOPOLOGY_STOPPED=0
topology_stop() {
    local group file pids names name
    TOPOLOGY_STOPPED=0
    for group in sentinel other; do
        pids=() names=()
        for file in "$RUN_DIR"/redis-*.pid; do
            [ -f "$file" ] || continue
            name="$(basename "$file" .pid)"
            name="${name#redis-}"
            [[ "$name" == sentinel-* ]] && [ "$group" = other ] && continue
            [[ "$name" != sentinel-* ]] && [ "$group" = sentinel ] && continue
            redis_process_alive "$name" || continue
            pids+=("$(<"$file")")
            names+=("$name")
        done
        [ "${#pids[@]}" -gt 0 ] || continue
        step "stopping redis-server ${names[*]} (SIGTERM)"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        # shellcheck disable=SC2317 # called by wait_until
        all_gone() {
            local p
            for p in "${pids[@]}"; do gone "$p" || return 1; done
        }
        if ! wait_until 15 "redis-server ${names[*]} to exit" all_gone; then
            kill -KILL "${pids[@]}" 2>/dev/null || true
            wait_until 5 "redis-server ${names[*]} to die" all_gone || die "could not stop redis-server ${names[*]}"
        fi
        for name in "${names[@]}"; do rm -f "$RUN_DIR/redis-$name".{pid,port}; done
        TOPOLOGY_STOPPED=$((TOPOLOGY_STOPPED + ${#pids[@]}))
    done
}
