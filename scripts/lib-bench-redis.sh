# shellcheck shell=bash
# The bench's Redis section (scripts/bench.sh redis): our redis-server alone, redis-benchmark of
# the commands wsfleet sends, against the Redis CPU per message of the closed loop. Sourced by
# scripts/bench.sh, never run.

# --- 2. Redis alone: redis-benchmark of the commands wsfleet sends ---------------------------

# lua_of CONST: the text of a counter script constant (r"…" raw string), as the server sends it.
lua_of() {
    awk -v name="$1" '
        index($0, "const " name ": &str = r\"") { on = 1; sub(/.*= r"/, ""); if ($0 == "") next }
        on && /^[^"]*";$/ { sub(/";$/, ""); if ($0 != "") print; exit }
        on { print }' "$ROOT_DIR"/src/counter/scripts.rs
}

# redis_run LABEL ARGS...: one redis-benchmark run; a table row with ops/s and Redis's own CPU
# time per operation (from /proc, so the benchmark client's CPU is not counted).
redis_run() {
    local label=$1
    shift
    local pid before after ops out
    pid="$(redis_pid)"
    before="$(awk '{ print $14 + $15 }' "/proc/$pid/stat")"
    out="$(timeout 120 redis-benchmark -p "$REDIS_PORT" -q "$@" 2>&1 | tr '\r' '\n' | grep 'requests per second' | tail -n 1)"
    after="$(awk '{ print $14 + $15 }' "/proc/$pid/stat")"
    ops="$(sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' <<<"$out" | cut -d. -f1)"
    local n
    n="$(awk '{ for (i = 1; i < NF; i++) if ($i == "-n") print $(i + 1) }' <<<"$*")"
    local us
    us="$(calc '%.2f' '(b - a) * 10000 / c' "$before" "$after" "$n")"
    say "    $label: ${ops:-?} ops/s, redis ${us} µs/op"
    md "| $label | \`redis-benchmark -p $REDIS_PORT -q $*\` | ${ops:-?} | $us |"
    REDIS_US["$label"]=$us
}

section_redis() {
    need_tool redis-benchmark redis-tools
    section_begin redis "Redis alone: redis-benchmark of the commands wsfleet sends"
    bench_stop_instances
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    local inc sha
    inc="$(lua_of INCREMENT_BATCH_LUA)"
    sha="$(redis-cli -p "$REDIS_PORT" script load "$inc")"
    [[ "$sha" =~ ^[0-9a-f]{40}$ ]] || die "could not load INCREMENT_BATCH_LUA from src/counter/scripts.rs into Redis: $sha"
    wait_for_quiet
    declare -gA REDIS_US=()
    md "Our redis-server alone (no wsfleet running), the commands and arguments wsfleet sends: the" \
        "increment script (\`INCREMENT_BATCH_LUA\` of src/counter/scripts.rs, loaded with SCRIPT LOAD, sha \`${sha:0:12}…\`," \
        "TTL, writer token, doubt flag and floor as wsfleet passes them, each call on a session of its own" \
        "(redis-benchmark cannot count one session up; its steady state is measured by" \
        "scripts/bench-tools/increment-ab.sh); wsfleet sends one call per batch of queued messages," \
        "so it is measured with 1 and with 16 messages a call), the registry's per-connection HSET and HDEL, the" \
        "lease renewal's ZADD, and the fan-out PUBLISH. \`-c 50\`: 50 connections, one command in flight" \
        "each; \`-P 16\`: 16 pipelined per connection, closer to wsfleet's one multiplexed connection." \
        "\"Redis µs/op\" is redis-server's own CPU time (utime + stime from /proc) ÷ requests." ""
    md "| operation | command | ops/s | Redis µs/op |" "| --- | --- | --- | --- |"
    local n=200000
    # -r 100000000: practically every call on a new session, so every call counts (a session
    # called again with the same floor would be refused as an old attempt).
    redis_run "EVALSHA increment (-c 50)" -n $n -c 50 -r 100000000 \
        evalsha "$sha" 1 "wsfleet:session:bench-__rand_int__" 86400000 "bench:1" 0 0
    redis_run "EVALSHA increment (-P 16)" -n $n -c 4 -P 16 -r 100000000 \
        evalsha "$sha" 1 "wsfleet:session:bench-__rand_int__" 86400000 "bench:1" 0 0
    # 16 messages of 16 sessions in one call, as a batch under load; µs/op is per call.
    local keys=() args=() i
    for i in $(seq 1 16); do
        keys+=("wsfleet:session:bench$i-__rand_int__")
        args+=("bench:$i" 0 0)
    done
    redis_run "EVALSHA increment, batch of 16 (-c 4)" -n $((n / 16)) -c 4 -r 100000000 \
        evalsha "$sha" 16 "${keys[@]}" 86400000 "${args[@]}"
    REDIS_US["per message in a batch of 16"]="$(calc '%.2f' 'a / 16' "${REDIS_US["EVALSHA increment, batch of 16 (-c 4)"]}" 0 0)"
    redis_run "HSET connection" -n $n -c 50 -r 100000 hset wsfleet:instance:bench:conns "__rand_int__" "session-__rand_int__"
    redis_run "HDEL connection" -n $n -c 50 -r 100000 hdel wsfleet:instance:bench:conns "__rand_int__"
    redis_run "ZADD lease" -n $n -c 50 -r 100000 zadd wsfleet:instances "__rand_int__" "instance-__rand_int__"
    redis_run "PUBLISH fan-out" -n $n -c 50 publish wsfleet:fanout '{"type":"heartbeat","ts":"2026-11-22T02:44:27.123Z"}'
    md ""
    local per_msg
    per_msg="$(cat "$BENCH_OUT/redis-us-per-message" 2>/dev/null || echo '?')"
    md "Redis CPU per message in wsfleet's closed loop (section \"Closed loop\" of the same run, median):" \
        "**$per_msg µs**, against **${REDIS_US["EVALSHA increment (-P 16)"]} µs** per one-message call here" \
        "pipelined, ${REDIS_US["EVALSHA increment (-c 50)"]} µs unpipelined, and" \
        "**${REDIS_US["per message in a batch of 16"]} µs** per message in a batch of 16. Redis's own ceiling for the" \
        "increment alone is the ops/s above with Redis at 100% of one core." ""
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    section_end
}
