# shellcheck shell=bash
# Our redis-server (make up starts one unless REDIS_URL names another Redis, or REDIS=sentinel|cluster
# asks for several: lib-redis-topology.sh, sourced at the end): how it is started,
# with which durability and memory bound, and how to tell that it runs. Sourced by lib-fleet.sh
# (its settings: REDIS_PORT, REDIS_MAXMEMORY, READY_TIMEOUT); never run.
#
# Durability: the append-only file is on (appendonly yes) and fsynced once a second (appendfsync
# everysec). Redis writes each batch of commands to the file (the kernel's page cache) before
# it replies, so a killed redis-server loses next to nothing it acknowledged (only when the
# disk lags behind the fsyncs does Redis hold writes back, for up to 2 s); a crash of the
# machine loses at most about the last second of increments (2 s when the disk is slow).
# `appendfsync always` would lose nothing even then, but makes every batch of increments wait
# for the disk, which caps the whole fleet at the disk's fsync rate. The second that can be lost is repaired by the server:
# an open socket continues above the highest count it saw, and a resuming client passes
# `last_count` (docs/PROTOCOL.md). The snapshot (dump.rdb) on shutdown stays as before.
#
# Memory: maxmemory REDIS_MAXMEMORY (default 256mb; a session key takes about 210 bytes, so
# about 1.2 million sessions fit), policy volatile-lru. Why that policy, for our keys
# (docs/DESIGN.md, "The registry in Redis"):
#   - volatile-*: only keys with a TTL are candidates. Every key of ours that grows with use has
#     one (sessions 24 h, registry records 15 s, heartbeat keys 2 intervals); the one without,
#     wsfleet:instances (one member per live instance), is never evicted, nor is anything else
#     kept in this Redis without a TTL.
#   - lru: the key unused longest goes first, i.e. the session idle longest, the least likely to
#     come back. Registry records and heartbeat keys are rewritten every few seconds, so they
#     are the last LRU would pick. An evicted counter of a session that does come back is
#     repaired as above (its open socket, or the client's last_count).
#   - not noeviction: a full Redis would refuse every increment, and every frame of the fleet
#     would be answered `unavailable`: an outage instead of a forgotten idle session.
#   - not volatile-ttl: the shortest TTL first means the registry (15 s) and the heartbeat lease
#     before any 24 h session: instances would vanish from the fleet view, the heartbeat flap.
#   - not volatile-lfu: a new session has a low use count and would go before an old idle one.
#   - not allkeys-*: they would evict wsfleet:instances and other users' keys too.
# A Redis given by REDIS_URL is not ours: set these on it yourself (redis-cli CONFIG SET).

REDIS_DIR="$RUN_DIR/redis"
REDIS_LOG="$RUN_DIR/redis.log"

# check_redis_maxmemory: REDIS_MAXMEMORY is a size Redis reads (bytes, or with k/kb/m/mb/g/gb),
# or die. 0 is Redis's "no bound", refused here: the fleet's Redis is meant to be bounded.
check_redis_maxmemory() {
    if ! [[ "$REDIS_MAXMEMORY" =~ ^[1-9][0-9]{0,8}([kKmMgG][bB]?)?$ ]]; then
        die "REDIS_MAXMEMORY must be a size Redis understands, like 256mb or 2gb (not 0), got ${REDIS_MAXMEMORY@Q}"
    fi
}

# redis_alive: our redis-server runs (its title names the port it was given).
redis_alive() {
    local port
    port="$(cat "$RUN_DIR/redis.port" 2>/dev/null || echo "?")"
    pid_alive "$RUN_DIR/redis.pid" "redis-server 127.0.0.1:$port"
}

redis_answers() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = "PONG" ]; }

# redis_aof_written PORT: the append-only file is on and no rewrite of it is pending.
redis_aof_written() {
    local info
    info="$(redis-cli -p "$1" info persistence 2>/dev/null | tr -d '\r')"
    [[ "$info" == *aof_enabled:1* && "$info" == *aof_rewrite_in_progress:0* &&
        "$info" == *aof_rewrite_scheduled:0* ]]
}

# redis_start: starts our redis-server on 127.0.0.1:REDIS_PORT (data in REDIS_DIR), waits until
# it answers PING, and dies showing its log if it does not.
redis_start() {
    local aof=yes log_start pid
    check_redis_maxmemory
    mkdir -p "$REDIS_DIR"
    # Data of a make up from before the append-only file was on is only in dump.rdb. Started
    # with appendonly yes and no append-only file yet, Redis would start empty and ignore it;
    # so it starts without, loads the dump, and turns the file on live (below).
    if [ -f "$REDIS_DIR/dump.rdb" ] && [ ! -e "$REDIS_DIR/appendonlydir" ] &&
        [ ! -e "$REDIS_DIR/appendonly.aof" ]; then
        aof=no
    fi
    step "starting redis-server on 127.0.0.1:$REDIS_PORT (data in $(rel "$REDIS_DIR")/, append-only file fsynced every second, maxmemory $REDIS_MAXMEMORY volatile-lru)"
    log_start=$(($(file_size "$REDIS_LOG") + 1))
    echo "$REDIS_PORT" >"$RUN_DIR/redis.port"
    spawn "$REDIS_LOG" "$RUN_DIR/redis.pid" redis-server --bind 127.0.0.1 \
        --port "$REDIS_PORT" --dir "$REDIS_DIR" --logfile "" --daemonize no \
        --appendonly "$aof" --appendfsync everysec \
        --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy volatile-lru
    pid="$(<"$RUN_DIR/redis.pid")"
    # shellcheck disable=SC2317 # called by wait_until
    redis_up() { gone "$pid" || redis_answers "$REDIS_PORT"; } # stop early if it died
    if ! wait_until "$READY_TIMEOUT" "redis-server to answer PING" redis_up || gone "$pid"; then
        tail -c "+$log_start" "$REDIS_LOG" | tail -n 20 >&2 || true
        gone "$pid" && rm -f "$RUN_DIR/redis.pid"
        die "redis-server did not start; its log is above ($(rel "$REDIS_LOG"))"
    fi
    if [ "$aof" = no ]; then
        step "writing the append-only file from the data of an earlier make up (CONFIG SET appendonly yes)"
        [ "$(redis-cli -p "$REDIS_PORT" config set appendonly yes 2>&1)" = OK ] ||
            die "redis-server refused to turn the append-only file on; see $(rel "$REDIS_LOG")"
        wait_until "$READY_TIMEOUT" "redis-server to write its append-only file" \
            redis_aof_written "$REDIS_PORT" ||
            die "redis-server did not write its append-only file; see $(rel "$REDIS_LOG")"
    fi
}

# The topologies of make up REDIS=sentinel|cluster.
# shellcheck source-path=SCRIPTDIR source=lib-redis-topology.sh
source "$ROOT_DIR/scripts/lib-redis-topology.sh"
